/*
 * smp_module.h: the whole contract between the SMProtocol core and a module.
 *
 * A module is a shared object (`<name>.so`) that exports one symbol:
 *
 *     const smp_module *smp_module_entry(void);
 *
 * The returned struct lives as long as the .so stays loaded (a static is
 * the natural choice). The core dlopens the module by the name written in
 * the YAML, calls the entry symbol, and refuses the module, naming it and
 * the reason, when:
 *   - `abi_major` differs from SMP_ABI_MAJOR;
 *   - `size` is smaller than SMP_MODULE_MIN_SIZE;
 *   - `name` differs from the name it was loaded by;
 *   - a hook marked REQUIRED below for the module's kind is NULL.
 *
 * Growth: fields are only ever appended. `size` is sizeof(smp_module) as
 * the module was compiled, so the core reads only the fields the module
 * knows. The same holds for every struct here that starts with `size`.
 *
 * Ownership, stated once: the module owns its memory; every pointer the
 * core passes to a hook is borrowed for the duration of that call, and
 * every pointer a module passes to the core is borrowed for the duration
 * of that call. Nothing C++ crosses this boundary: every hook catches all
 * exceptions inside the module and returns a code plus, where the hook has
 * one, a message in the caller's error buffer.
 *
 * Processes: hooks named `*_master` run in the master before fork; hooks
 * named `*_worker` and the connection hooks run in a worker process after
 * fork, on that worker's event loop, and must never block it.
 */
#ifndef SMP_MODULE_H
#define SMP_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMP_ABI_MAJOR 1
#define SMP_ABI_MINOR 6

/* Return codes of hooks. Negative values are errors. */
#define SMP_OK 0
#define SMP_ERROR (-1)
#define SMP_REFUSE 1 /* connection hook: refuse this connection */

typedef enum smp_module_kind {
    SMP_MODULE_PROTOCOL = 1, /* owns the bytes of connections on its listeners */
    SMP_MODULE_PLUGIN = 2    /* subscribes to connection, transfer and close hooks */
} smp_module_kind;

typedef enum smp_log_level {
    SMP_LOG_TRACE = 0,
    SMP_LOG_DEBUG = 1,
    SMP_LOG_INFO = 2,
    SMP_LOG_WARN = 3,
    SMP_LOG_ERROR = 4
} smp_log_level;

/*
 * Why a request ended: a closed list, and every record carries exactly one.
 * New reasons are appended; a consumer that meets an unknown value treats
 * it as an error of unknown kind.
 */
typedef enum smp_end_reason {
    SMP_END_COMPLETED = 0,
    SMP_END_CLIENT_CLOSED = 1,
    SMP_END_TIMEOUT = 2,
    SMP_END_WRITE_ERROR = 3,
    SMP_END_READ_ERROR = 4,
    SMP_END_SERVER_SHUTDOWN = 5,
    SMP_END_REJECTED_LIMIT = 6,
    SMP_END_NOT_FOUND = 7,
    SMP_END_NOT_MODIFIED = 8,
    SMP_END_RANGE_NOT_SATISFIABLE = 9,
    SMP_END_BAD_REQUEST = 10,
    SMP_END_UPSTREAM_ERROR = 11,
    SMP_END_WORKER_LOST = 12,
    SMP_END_FORBIDDEN = 13,
    SMP_END_METHOD_NOT_ALLOWED = 14,
    SMP_END_PRECONDITION_FAILED = 15,
    SMP_END_INTERNAL_ERROR = 16,
    /* Downloads only: every request ended well, but they did not cover the
       whole file (a client that asked for part of it, and no more). */
    SMP_END_INCOMPLETE = 17,
    /* ABI 1.5. A running request whose end never reached the stats collector
       (its close record was lost), ended from its last progress report. */
    SMP_END_RECORD_LOST = 18,
    /* ABI 1.5. Downloads only: finished early, before every byte was
       delivered, because the collector held tracking.max_open_downloads. */
    SMP_END_TRACKING_CAP = 19
} smp_end_reason;

/* ---- configuration ------------------------------------------------------
 * A module declares its keys in one table; the core validates the YAML
 * against it (unknown key, wrong type, missing required key: an error that
 * names the key, the file and the line) and hands the module the values in
 * table order. `module`, `host` and `port` are the core's own keys.
 */
typedef enum smp_config_type {
    SMP_CONFIG_STRING = 1,
    SMP_CONFIG_INT = 2,      /* signed 64-bit integer */
    SMP_CONFIG_SIZE = 3,     /* bytes; accepts units: 256KiB, 1MiB, 10MB, 4k */
    SMP_CONFIG_DURATION = 4, /* milliseconds; accepts units: 500ms, 30s, 5m, 1h */
    SMP_CONFIG_BOOL = 5,
    SMP_CONFIG_STRING_LIST = 6
} smp_config_type;

typedef struct smp_config_key {
    const char* name;
    smp_config_type type;
    const char* default_value; /* as it would be written in YAML; NULL: none */
    int required;              /* 1: the key must be present */
    const char* description;
} smp_config_key;

typedef struct smp_config_value {
    int present;             /* 1 when set in the YAML or by a default */
    const char* string;      /* STRING */
    int64_t number;          /* INT, SIZE, DURATION, BOOL (0 or 1) */
    const char* const* list; /* STRING_LIST */
    size_t list_length;      /* STRING_LIST */
    int line;                /* 1-based line in the config file; 0 for a default */
} smp_config_value;

/* ---- records ------------------------------------------------------------ */

/* A closed byte interval [first, last] of a file actually sent to the client. */
typedef struct smp_interval {
    uint64_t first;
    uint64_t last;
} smp_interval;

/* What the core knows of an accepted connection. */
typedef struct smp_connection_info {
    uint32_t size;
    uint64_t connection_id; /* unique within the worker's lifetime, with worker_id unique on the node */
    uint32_t worker_id;
    const char* module;    /* the protocol module's name */
    const char* client_ip; /* textual, "127.0.0.1" or "::1" */
    uint16_t client_port;
    const char* local_ip;
    uint16_t local_port;
    int64_t accepted_us; /* wall clock, microseconds since the Unix epoch */
} smp_connection_info;

/*
 * One record per HTTP exchange (or proxied connection). Strings may be NULL
 * when unknown. Passed to the transfer hook while the exchange is running
 * (reason is then meaningless) and to the close hook once, when it ended.
 */
typedef struct smp_record {
    uint32_t size;
    uint64_t connection_id;
    uint64_t request_id; /* 1, 2, ... within the connection */
    uint32_t worker_id;
    const char* module;
    const char* node; /* host name */
    int64_t start_us; /* first byte of the request received */
    int64_t end_us;   /* last byte sent, or the end of the exchange */
    const char* client_ip;
    uint16_t client_port;
    const char* forwarded_ip; /* the client behind a trusted proxy; NULL when none */
    const char* method;
    const char* path;     /* the decoded path served */
    const char* target;   /* the request target as received */
    const char* protocol; /* "HTTP/1.1" */
    const char* user_agent;
    const char* referer;
    const char* range; /* the Range header as received */
    const char* etag;
    int64_t file_size;             /* -1 when no file was resolved */
    int status;                    /* 0 when no response was sent */
    const smp_interval* intervals; /* byte intervals of the file sent so far */
    size_t interval_count;
    uint64_t header_bytes; /* response header bytes sent */
    uint64_t body_bytes;   /* response body bytes sent (multipart framing included) */
    smp_end_reason reason;
    /* ABI 1.4: bytes received from the client for this exchange: request head
       and body (tcp mode: every byte). Read only when `size` covers it:
       smp_record_received_bytes(). */
    uint64_t received_bytes;
    /* ABI 1.6, set by the core on the records a store receives (a module
       leaves them 0): where the record is in its worker's record log, the
       log's number and the record's index in it (1, 2, ...). A log's records
       reach a store in index order, but after a collector crash the ones
       since its last checkpoint are offered again: a store keeps the last
       index it has of each log, in the same transaction as the batch, and
       skips a record at or below it. 0 and 0: not from a log (a record the
       collector made up), never skipped. Read only when `size` covers them:
       smp_record_log_index(). */
    uint64_t log_number;
    uint64_t log_index;
} smp_record;

/* A record's received_bytes, or 0 when the module was built before ABI 1.4
   and its record is too small to hold the field. */
static inline uint64_t smp_record_received_bytes(const smp_record* record) {
    return record->size >= offsetof(smp_record, received_bytes) + sizeof(record->received_bytes)
               ? record->received_bytes
               : 0;
}

/* A record's log_index, or 0 when the record is too small to hold it. */
static inline uint64_t smp_record_log_index(const smp_record* record) {
    return record->size >= offsetof(smp_record, log_index) + sizeof(record->log_index) ? record->log_index : 0;
}

/* A logical download as stored (ABI 1.2): every request of one client for
   one file and ETag within the idle window. */
typedef struct smp_download {
    uint32_t size;
    uint64_t id;           /* unique per node; a download stored twice is stored once (upsert) */
    const char* client_ip; /* the forwarded client behind a trusted proxy, else the peer */
    const char* user_agent;
    const char* path;
    const char* etag;
    uint64_t file_size;
    uint64_t distinct_bytes; /* bytes of the file delivered at least once */
    uint64_t bytes_sent;     /* file bytes sent, repeats included */
    uint64_t wasted_bytes;   /* bytes_sent - distinct_bytes */
    int completed;           /* every byte delivered */
    uint32_t requests;
    uint32_t resumes;
    int64_t first_us;
    int64_t last_us;
    int64_t active_us; /* time in which at least one request was transferring */
    smp_end_reason reason;
    const smp_interval* delivered; /* the union of the byte intervals delivered */
    size_t delivered_count;
    const char* country; /* ISO code, or NULL */
    const char* city;
    int has_location;
    double latitude;
    double longitude;
    uint32_t asn; /* 0: unknown */
    const char* organisation;
    int finished;     /* 0: still open (more requests may join it); 1: ended, this is its final state */
    const char* node; /* the server that served it (ids are unique per node) */
} smp_download;

/* What a storage plugin stores in one call. A download appears in every
   batch of the second it changed in, open at first, finished at last: a
   store upserts it by id. A batch may be offered again (after a failed
   call, or replayed from the spool after a restart): `origin` and
   `sequence` name it, so a store can skip one it already stored. */
typedef struct smp_batch {
    uint32_t size;
    const smp_record* records; /* finished requests */
    size_t record_count;
    const smp_download* downloads; /* logical downloads that changed */
    size_t download_count;
    uint64_t origin;   /* the collector run that made it: its start time, microseconds */
    uint64_t sequence; /* 1, 2, ... within an origin, in the order the batches are offered */
} smp_batch;

/* A report asked of a store by `smprotocol stats` (ABI 1.2). */
typedef struct smp_query {
    uint32_t size;
    const char* report; /* "summary", "files", "countries", "reasons", "downloads" */
    int64_t since_us;   /* 0: from the start */
    int64_t until_us;   /* 0: until now */
    const char* path;   /* only this file (as stored: relative to the root), or NULL */
} smp_query;

/* A report's answer: a table the core prints as text or JSON. The store
   owns it until it is handed back to its free_table hook. */
typedef struct smp_table {
    uint32_t size;
    size_t column_count;
    const char* const* columns; /* names, also the JSON keys */
    const int* numeric;         /* per column: 1 when its cells are numbers */
    size_t row_count;
    const char* const* cells; /* row after row; NULL for no value */
} smp_table;

/* ---- what the core offers a module -------------------------------------- */

typedef struct smp_worker smp_worker; /* opaque: the core's per-worker state */

typedef struct smp_core_api {
    uint32_t size;
    /* Logs through the core's logger, prefixed with the module's name. */
    void (*log)(smp_log_level level, const char* module, const char* message);
    int (*log_enabled)(smp_log_level level);
    /* Worker side: progress of a running exchange (throttle it: at most about once a second). */
    void (*transfer)(smp_worker* worker, const smp_record* record);
    /* Worker side: an exchange ended; the final record. Exactly once per record. */
    void (*close)(smp_worker* worker, const smp_record* record);
    /* Worker side: the module closed a connection it was given by accept.
       Exactly once per accepted connection, after its last close(). */
    void (*disconnect)(smp_worker* worker, const smp_connection_info* info);
    /* ABI 1.1. Worker side: 1 when `ip` is one of the configured
       trusted_proxies, whose X-Forwarded-For / Forwarded may be believed. */
    int (*trusted_proxy)(smp_worker* worker, const char* ip);
    /* ABI 1.3. Worker side: one of `limit` slots of `key` in a counter that
       plugins share across servers (memcache), held at most `ttl_s` seconds.
       1: taken, release it with limit_release; 0: all taken; -1: no shared
       counter can answer (none configured, or its server is down and the
       plugin says to fall back): use the server's own counters. Never blocks
       the loop for longer than the plugin's timeouts (tens of milliseconds). */
    int (*limit_acquire)(smp_worker* worker, const char* key, uint32_t limit, uint32_t ttl_s);
    void (*limit_release)(smp_worker* worker, const char* key);
    /* ABI 1.4. Worker side: a cache of file bodies that plugins share across
       servers (memcache). `key` names one version of a file (the module puts
       its size and mtime in it, so a changed file is a new key).
       cache_max_size: the largest body a plugin would keep; 0: no cache.
       cache_get: 1: `size` bytes copied into `buffer`; 0: not cached;
       -1: cannot answer (too big, or the cache is down).
       cache_set: offers a body; the plugin copies what it keeps.
       Same bound on blocking as limit_acquire. */
    uint64_t (*cache_max_size)(smp_worker* worker);
    int (*cache_get)(smp_worker* worker, const char* key, void* buffer, uint64_t size);
    void (*cache_set)(smp_worker* worker, const char* key, const void* data, uint64_t size);
} smp_core_api;

/* What a worker gives a module after fork. */
typedef struct smp_worker_context {
    uint32_t size;
    uv_loop_t* loop;    /* the worker's own loop, created after fork */
    smp_worker* worker; /* pass back to smp_core_api calls */
    uint32_t worker_id; /* 1..N */
    const char* node;
} smp_worker_context;

/* ---- the module --------------------------------------------------------- */

typedef struct smp_module {
    uint32_t size;      /* sizeof(smp_module) as the module was compiled */
    uint32_t abi_major; /* SMP_ABI_MAJOR */
    uint32_t abi_minor; /* SMP_ABI_MINOR */
    smp_module_kind kind;
    const char* name; /* equals the .so name and the YAML name */
    const char* description;

    const smp_config_key* config_keys; /* may be NULL when there are none */
    size_t config_key_count;

    /* REQUIRED. Master, before fork: check the values and build the
       instance. On failure, write a sentence to `error` and return SMP_ERROR. */
    int (*init_master)(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                       size_t error_size);
    /* OPTIONAL. Master, at exit. */
    void (*exit_master)(void* instance);

    /* REQUIRED for protocols, OPTIONAL for plugins. Worker, after fork:
       build the worker's state. */
    int (*init_worker)(void* instance, const smp_worker_context* context, void** worker_state, char* error,
                       size_t error_size);
    /* OPTIONAL. Worker, when its loop has stopped, to free the worker's state. */
    void (*exit_worker)(void* worker_state);

    /* Protocols. */
    /* REQUIRED. A connection accepted on this module's listener: the module
       owns `fd` (non-blocking) from now on, even when it returns SMP_ERROR,
       and calls core->disconnect once when it closed it. */
    int (*accept)(void* worker_state, int fd, const smp_connection_info* info);
    /* REQUIRED. Graceful stop: close idle connections now, let running
       exchanges finish, then close their connections. */
    void (*shutdown)(void* worker_state);

    /* Plugins: all OPTIONAL, at least one of them REQUIRED. */
    /* A connection was accepted; SMP_REFUSE closes it before any byte is read. */
    int (*on_connection)(void* worker_state, const smp_connection_info* info);
    void (*on_transfer)(void* worker_state, const smp_record* record);
    void (*on_close)(void* worker_state, const smp_record* record);
    void (*on_disconnect)(void* worker_state, const smp_connection_info* info);

    /* ABI 1.2. Storage plugins: these run in the stats collector process. */
    /* OPTIONAL. Collector, after fork: build the collector's state. */
    int (*init_collector)(void* instance, void** collector_state, char* error, size_t error_size);
    /* OPTIONAL. Collector, at exit, after the last store. */
    void (*exit_collector)(void* collector_state);
    /* OPTIONAL; a plugin that has it is a store. Called on the collector's
       storage thread, one call at a time, never on an event loop. SMP_ERROR
       with a sentence in `error`: the batch goes to the spool on disk and
       is offered again, in order, until it is stored. */
    int (*store)(void* collector_state, const smp_batch* batch, char* error, size_t error_size);
    /* OPTIONAL; answers `smprotocol stats`. Master (the stats command's own
       process), after init_master. SMP_ERROR with a sentence in `error`. */
    int (*query)(void* instance, const smp_query* query, smp_table** table, char* error, size_t error_size);
    /* REQUIRED with query: frees what query returned. */
    void (*free_table)(void* instance, smp_table* table);

    /* ABI 1.3. Shared counters (core->limit_acquire), worker side; both or neither. */
    int (*counter_acquire)(void* worker_state, const char* key, uint32_t limit, uint32_t ttl_s);
    void (*counter_release)(void* worker_state, const char* key);

    /* ABI 1.4. A shared cache of file bodies (core->cache_get), worker side;
       all three or none. Same meaning as the core's functions of those names. */
    uint64_t (*cache_max_size)(void* worker_state);
    int (*cache_get)(void* worker_state, const char* key, void* buffer, uint64_t size);
    void (*cache_set)(void* worker_state, const char* key, const void* data, uint64_t size);

    /* ABI 1.5. OPTIONAL. Master: a worker process (of this configuration or
       of any other still running, during a reload) has ended and been
       reaped. A module that keeps state in memory its workers share frees
       what `pid` held there (slots of a limit), so that nothing waits on a
       process that is gone and a later process given the same pid inherits
       nothing. Called for every loaded instance; on the master's loop, so it
       must not block. */
    void (*worker_gone_master)(void* instance, int pid);

    /* ABI 1.5. OPTIONAL, protocols. Worker: it holds max_connections
       connections and has stopped accepting, while new ones wait in the
       listen backlog. Close up to `count` of this module's connections that
       are cheapest to lose (idle between requests, or a request head still
       arriving long after it began), oldest first, and return how many are
       closing; their core->disconnect follows, and the worker accepts again
       (nginx's reusable connections). */
    int (*reclaim)(void* worker_state, int count);
} smp_module;

/* The smallest module struct the core accepts: everything up to on_disconnect. */
#define SMP_MODULE_MIN_SIZE (offsetof(smp_module, on_disconnect) + sizeof(void*))

/* A hook of a later ABI minor than the module may know: NULL when its
   struct is too small to hold it. */
#define SMP_MODULE_HOOK(module, field) \
    ((module)->size >= offsetof(smp_module, field) + sizeof((module)->field) ? (module)->field : NULL)

#define SMP_MODULE_ENTRY_SYMBOL "smp_module_entry"
typedef const smp_module* (*smp_module_entry_fn)(void);

/* Text of an end reason as stored and logged ("completed", "client_closed"...). */
static inline const char* smp_end_reason_name(smp_end_reason reason) {
    switch (reason) {
        case SMP_END_COMPLETED: return "completed";
        case SMP_END_CLIENT_CLOSED: return "client_closed";
        case SMP_END_TIMEOUT: return "timeout";
        case SMP_END_WRITE_ERROR: return "write_error";
        case SMP_END_READ_ERROR: return "read_error";
        case SMP_END_SERVER_SHUTDOWN: return "server_shutdown";
        case SMP_END_REJECTED_LIMIT: return "rejected_limit";
        case SMP_END_NOT_FOUND: return "not_found";
        case SMP_END_NOT_MODIFIED: return "not_modified";
        case SMP_END_RANGE_NOT_SATISFIABLE: return "range_not_satisfiable";
        case SMP_END_BAD_REQUEST: return "bad_request";
        case SMP_END_UPSTREAM_ERROR: return "upstream_error";
        case SMP_END_WORKER_LOST: return "worker_lost";
        case SMP_END_FORBIDDEN: return "forbidden";
        case SMP_END_METHOD_NOT_ALLOWED: return "method_not_allowed";
        case SMP_END_PRECONDITION_FAILED: return "precondition_failed";
        case SMP_END_INTERNAL_ERROR: return "internal_error";
        case SMP_END_INCOMPLETE: return "incomplete";
        case SMP_END_RECORD_LOST: return "record_lost";
        case SMP_END_TRACKING_CAP: return "tracking_cap";
    }
    return "unknown";
}

#ifdef __cplusplus
}
#endif

#endif /* SMP_MODULE_H */
