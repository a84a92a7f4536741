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
 *   - `size` is smaller than SMP_MODULE_MIN_SIZE;
 *   - `abi_major` differs from SMP_ABI_MAJOR;
 *   - `abi_minor` is greater than this core's SMP_ABI_MINOR (the module may
 *     need something this core lacks): "built for ABI 1.8, this server has
 *     ABI 1.7";
 *   - (ABI 1.7) `uv_version` names a libuv of another major version than the
 *     one running (uv_version()), or a newer minor: the module drives the
 *     core's uv_loop_t with the running library, which is compatible with
 *     what was built against its own major version and an older or equal
 *     minor, and with nothing else. 0 is refused too (not stamped);
 *   - `name` differs from the name it was loaded by;
 *   - `kind` differs from the YAML section it is named in;
 *   - a hook marked REQUIRED below for the module's kind is NULL, or one of
 *     hooks that come together (counter_*, cache_*, query and free_table,
 *     an *_async hook and cancel_async) is set without the others;
 *   - (ABI 1.7) `config_key_size` is set and smaller than a 1.0 smp_config_key.
 * SMP_MODULE_INIT (C) or smp_module_stamp() (C or C++) set size, abi_major,
 * abi_minor, uv_version and config_key_size as the module is compiled.
 *
 * Growth: fields are only ever appended. `size` is sizeof(smp_module) as
 * the module was compiled, so the core reads only the fields the module
 * knows; the same holds for every struct here that starts with `size`, in
 * both directions. SMP_HAS(pointer, field) says whether a struct holds a
 * field: a module asks it of `core` before calling a function of a later
 * minor than 1.0, and the core asks it of the module's structs.
 * A module built for an older minor runs unchanged in a newer core of the
 * same major; a module built for a newer minor is refused (above), so a
 * module only ever meets a core that knows at least what it knows.
 *
 * Ownership, stated once: the module owns its memory; every pointer the
 * core passes to a hook is borrowed for the duration of that call, and
 * every pointer a module passes to the core is borrowed for the duration
 * of that call. The exceptions, each repeated where it applies:
 *   - the smp_core_api given to init_master is static in the core: keep it
 *     for the life of the process (every process forked from the master);
 *   - the smp_worker_context given to init_worker, and the loop, worker and
 *     node it points at, stay valid until that worker's exit_worker has
 *     returned: a module keeps them for the worker's life;
 *   - the smp_module struct and the config_keys table a module returns are
 *     read for as long as the .so is loaded;
 *   - the smp_config_value array given to init_master, and the strings it
 *     points at, stay valid until exit_master (and in every process forked
 *     after init_master, for that process's life);
 *   - an smp_table a query returns is the module's until free_table.
 * Nothing C++ crosses this boundary: every hook catches all exceptions
 * inside the module and returns a code plus, where the hook has one, a
 * message in the caller's error buffer (a NUL-terminated sentence of at
 * most error_size bytes, the NUL included).
 *
 * Processes and threads. Each hook below says where it runs:
 *   - master: the master process, before it forks workers (and again on a
 *     reload, with the old configuration's workers still serving). Also the
 *     short-lived processes of `smprotocol -t` (init_master, exit_master)
 *     and `smprotocol stats` (init_master, query, free_table, exit_master).
 *   - worker: a worker process, after fork, on the thread that runs the
 *     worker's uv_loop_t. "Worker loop" hooks and core calls run inside a
 *     loop callback: they MUST NOT block (no disk reads of unknown length,
 *     no network round trips, no sleeping, no waiting on a lock another
 *     process holds). Every other connection waits while one of them runs.
 *   - collector: the stats collector process, on its storage thread (one
 *     per store; never an event loop): these hooks may block.
 * "May block" below means the core does not mind the hook taking time
 * there; what it delays is said with it.
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
#define SMP_ABI_MINOR 13

/*
 * What a hook that returns `int` returns, unless it says otherwise (the
 * counter, cache and reclaim hooks return numbers of their own, and the
 * asynchronous calls SMP_PENDING besides). Hooks keep
 * `int` in their signatures, so that modules written before this enum
 * compile unchanged; the names and values are those of ABI 1.0's #defines.
 * Return one of these values and no other: the core compares with them
 * (init_master: anything but SMP_OK fails the configuration).
 */
typedef enum smp_status {
    SMP_ERROR = -1, /* failed: a sentence in the error buffer, where the hook has one */
    SMP_OK = 0,
    SMP_REFUSE = 1, /* on_connection only: close this connection before any byte is read */
    SMP_PENDING = 2 /* ABI 1.8, the *_async calls only: the answer comes later, to `done` */
} smp_status;

/*
 * SMP_HAS(pointer, field): 1 when the struct `pointer` points at holds
 * `field`, by its `size` (what its builder knew), else 0. Works on every
 * struct here that starts with `size`, in C and C++ (g++ and clang):
 *
 *     if (SMP_HAS(core, cache_set)) core->cache_set(...);    ABI 1.4
 */
#define SMP_HAS(pointer, field) \
    ((size_t)(pointer)->size >= offsetof(__typeof__(*(pointer)), field) + sizeof((pointer)->field))

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
    SMP_END_TRACKING_CAP = 19,
    /* ABI 1.11. A signed link whose time ran out (secure_link): 410 Gone. */
    SMP_END_LINK_EXPIRED = 20
} smp_end_reason;

/* ---- configuration ------------------------------------------------------
 * A module declares its keys in one table; the core validates the YAML
 * against it (unknown key, wrong type, missing required key: an error that
 * names the key, the file and the line) and hands the module the values in
 * table order. `module`, `host` and `port` are the core's own keys.
 *
 * ABI 1.9: a key's name is a path into the module's entry (a module built
 * for an older minor names its keys flat: a dot is then part of the name).
 *   - `tls.certificate` is the value at `tls:` then `certificate:`, at any
 *     depth (`a.b.c`). A map such as `tls:` is a known key because some
 *     declared key starts with `tls.`; it must be a map, and a key inside it
 *     that no declared key names is an unknown key
 *     ("protocols[0].tls.foo: unknown key of module 'x'").
 *   - `tls.certificates[].key` (type SMP_CONFIG_STRING_LIST, no default)
 *     reaches into a list of maps: for each element of the sequence
 *     `tls:` then `certificates:`, in order, the string of its `key:`
 *     field. Each element must be a map whose every key is the field of some
 *     declared `tls.certificates[].*` key. The fields of one sequence give
 *     lists of the same length, so index i of each is element i: an element
 *     without an optional field gives "" in that field's list. One `[]` per
 *     name at most, never at its end.
 *   - Required: a key is required where its parent map is present. A
 *     top-level key always; `tls.certificate` only when `tls:` is written
 *     (so a whole `tls:` block may be optional and yet need its
 *     certificate); a `[]` field in every element ("protocols[0].tls.
 *     certificates[1].key: missing required key").
 *   - Defaults: a key's default fills its value whenever the key is absent,
 *     so a module always has one; but `present` is 1 only when the key or
 *     its parent map is written. A module tells "no tls: block at all" from
 *     a required key of the block: `tls.certificate` is present exactly
 *     when `tls:` is written (the core refuses a `tls:` without it).
 * A name that is both a value and a map (`tls` and `tls.key`), or whose
 * parts disagree on being a list, is refused when the module is loaded.
 *
 * Both are arrays of structs that may grow, so each has a stride that is
 * not the reader's sizeof:
 *   - the module's table steps by smp_module.config_key_size (ABI 1.7, set
 *     by SMP_MODULE_INIT / smp_module_stamp to sizeof(smp_config_key) as
 *     the module was compiled; absent or 0: the 1.0 size);
 *   - the core's values step by smp_core_api.config_value_size (ABI 1.7):
 *     read the i-th with smp_config_value_at(core, values, i). It grew in
 *     1.9 (list_lines): a module built for 1.7 or 1.8 that indexes
 *     values[i] instead must be rebuilt. A module built before 1.7, which
 *     had no stride to read, is given its values at the 1.0 size.
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
    /* New fields are appended here; the core reads them only when the
       module's config_key_size covers them. */
} smp_config_key;

typedef struct smp_config_value {
    /* 1 when set in the YAML, or by a default while the key's parent map is
       written (a top-level key's parent, the entry, always is). */
    int present;
    const char* string;      /* STRING; a default's even when present is 0 */
    int64_t number;          /* INT, SIZE, DURATION, BOOL (0 or 1) */
    const char* const* list; /* STRING_LIST; NULL when absent with no default */
    size_t list_length;      /* STRING_LIST */
    int line;                /* 1-based line in the config file; 0 for a default */
    /* ABI 1.9. STRING_LIST: the 1-based line of each element, list_length
       of them (0 for a default's): a list of scalars, each scalar's line; a
       `[]` field, the line of the field in element i, or of the element
       when it lacks the field. NULL for the other types. Read it with
       smp_config_list_line(), which knows a core before 1.9. */
    const int* list_lines;
    /* New fields are appended here; the core steps through the array by
       its own sizeof, which it states in core->config_value_size. */
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
    /* ABI 1.12: the client address as a module's log lines may show it:
       shortened under privacy.anonymize_ip (docs/privacy.md), else
       client_ip. Read only when `size` covers it: smp_logged_ip(). */
    const char* logged_ip;
} smp_connection_info;

/* The address a log line names the client by. */
static inline const char* smp_logged_ip(const smp_connection_info* info) {
    return SMP_HAS(info, logged_ip) && info->logged_ip != NULL ? info->logged_ip : info->client_ip;
}

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
    /* ABI 1.9: the TLS version the exchange was served over, "TLSv1.2" or
       "TLSv1.3"; NULL over plain TCP. Read only when `size` covers it:
       smp_record_tls_version(). */
    const char* tls_version;
    /* ABI 1.12, set by the core on the records a store receives (a module
       leaves it NULL): who the client is, from its User-Agent and the
       tracking.client_classes rules: "browser", "download_manager", "tool",
       "bot" or "unknown". Read only when `size` covers it:
       smp_record_client_class(). */
    const char* client_class;
} smp_record;

/* A record's received_bytes, or 0 when the module was built before ABI 1.4
   and its record is too small to hold the field. */
static inline uint64_t smp_record_received_bytes(const smp_record* record) {
    return SMP_HAS(record, received_bytes) ? record->received_bytes : 0;
}

/* A record's log_index, or 0 when the record is too small to hold it. */
static inline uint64_t smp_record_log_index(const smp_record* record) {
    return SMP_HAS(record, log_index) ? record->log_index : 0;
}

/* A record's tls_version, or NULL when the exchange was not over TLS or the
   module was built before ABI 1.9 and its record is too small to hold it. */
static inline const char* smp_record_tls_version(const smp_record* record) {
    return SMP_HAS(record, tls_version) ? record->tls_version : NULL;
}

/* A record's client_class, or "unknown" when it has none (a module's own
   record, or one too small to hold the field). */
static inline const char* smp_record_client_class(const smp_record* record) {
    return SMP_HAS(record, client_class) && record->client_class != NULL ? record->client_class : "unknown";
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
    /* ABI 1.12: the client_class of its requests (see smp_record). Read only
       when `size` covers it: smp_download_client_class(). */
    const char* client_class;
    /* ABI 1.13: the times in which at least one of its requests was
       transferring, as inclusive microsecond spans in order ([first, last],
       the clock of first_us); `resumes` counts the gaps between them. A store
       that merges one download's parts from several nodes (docs/scale.md)
       unites them. Read only when `size` covers them: smp_download_active(). */
    const smp_interval* active;
    size_t active_count;
} smp_download;

/* A download's client_class, or "unknown" when it has none. */
static inline const char* smp_download_client_class(const smp_download* download) {
    return SMP_HAS(download, client_class) && download->client_class != NULL ? download->client_class : "unknown";
}

/* A download's active spans (see smp_download.active); none from a core
   before ABI 1.13. */
static inline size_t smp_download_active(const smp_download* download, const smp_interval** spans) {
    *spans = SMP_HAS(download, active_count) ? download->active : NULL;
    return *spans != NULL ? download->active_count : 0;
}

/* What a storage plugin stores in one call. A download appears in the
   batch of every second it changed in, open while it grows (once it is a
   second old), finished at last; one that ended within its first second
   appears once, finished. A store upserts it by id. A batch may be offered again (after a failed
   call, or replayed from the spool after a restart): `origin` and
   `sequence` name it, so a store can skip one it already stored.
   `records` and `downloads` are arrays of the core's own smp_record and
   smp_download, stepping by the core's sizeof: each element's `size` says
   which fields it holds, but a store built for a minor before the one that
   last grew them (1.12 for records, 1.13 for downloads) indexes them
   wrongly. Build stores against the core's header; a stride here is left
   for a later minor. */
typedef struct smp_batch {
    uint32_t size;
    const smp_record* records; /* finished requests */
    size_t record_count;
    const smp_download* downloads; /* logical downloads that changed */
    size_t download_count;
    uint64_t origin;   /* the collector run that made it: its start time, microseconds */
    uint64_t sequence; /* 1, 2, ... within an origin, in the order the batches are offered */
} smp_batch;

/* A report asked of a store by `smprotocol stats` (ABI 1.2). The core
   passes the name the user typed, unchecked: a store answers the reports it
   knows and SMP_ERROR "no report 'NAME'" for any other, so that a store
   built before a report was named says so ("tls" was added with ABI 1.9,
   docs/stats.md has the columns of each). */
typedef struct smp_query {
    uint32_t size;
    const char* report; /* "summary", "files", "countries", "reasons", "downloads", "tls",
                           (1.10) "timeseries", "in_progress", (1.12) "clients" */
    int64_t since_us;   /* 0: from the start */
    int64_t until_us;   /* 0: until now */
    const char* path;   /* only this file (as stored: relative to the root), or NULL */
    /* ABI 1.10: the width of a "timeseries" report's rows, "minute", "hour"
       or "day"; NULL: "hour". Read only when `size` covers it. */
    const char* bucket;
    /* ABI 1.12: 0 (the default): the reports count people, leaving out the
       requests and downloads whose client_class is "bot"; 1: everyone.
       Read only when `size` covers it: smp_query_include_bots(). */
    int include_bots;
} smp_query;

static inline int smp_query_include_bots(const smp_query* query) {
    return SMP_HAS(query, include_bots) ? query->include_bots : 0;
}

/* A report's answer: a table the core prints as text or JSON. The store
   owns it until it is handed back to its free_table hook. */
typedef struct smp_table {
    uint32_t size;
    size_t column_count;
    const char* const* columns; /* names, also the JSON keys */
    /* Per column: 0 text, 1 numbers, (ABI 1.10) 2 booleans, whose cells
       are "0" or "1" and are printed as JSON false and true. */
    const int* numeric;
    size_t row_count;
    const char* const* cells; /* row after row; NULL for no value */
} smp_table;

/* ---- what the core offers a module --------------------------------------
 *
 * One static smp_core_api, given to init_master: a module keeps the pointer
 * for the life of the process, and of every process forked from it. Every
 * function is REQUIRED of the core (never NULL) from the minor that added
 * it on; ask SMP_HAS(core, field) before calling one added after 1.0.
 * Strings and records a module passes are borrowed for the call: the core
 * copies what it keeps.
 */

typedef struct smp_worker smp_worker; /* opaque: the core's per-worker state */

/*
 * ABI 1.8. Asynchronous calls: a plugin that waits on the network (memcache)
 * answers later, on the same worker loop, and no worker ever blocks on it.
 *
 * A call (limit_acquire_async, cache_get_async) either answers at once, and
 * returns the answer (what the synchronous form returns; `done` is never
 * called), or returns SMP_PENDING and sets `*call`. Then `done(data,
 * answer)` runs exactly once, on the worker's loop, in a later loop callback
 * than the call (never inside it), within the plugin's own timeout, unless
 * the caller cancels the call first (limit_cancel, cache_cancel, with the
 * `*call` it was given): after a cancel, `done` never runs and the plugin
 * no longer touches what the call lent it. A caller that goes away (a
 * connection closing) cancels what it still waits for; one that got its
 * answer must not cancel. `call` is the plugin's, valid until `done` has
 * run or the cancel has returned.
 */
typedef struct smp_async smp_async;
typedef void (*smp_async_done)(void* data, int answer);

/* ABI 1.10. Where a connection is, for the metrics: reading a request
   (its head, or a body it must read), writing a response, or idle between
   requests (keep-alive). NONE: not counted (before accept, after close). */
typedef enum smp_connection_phase {
    SMP_PHASE_NONE = 0,
    SMP_PHASE_READING = 1,
    SMP_PHASE_WRITING = 2,
    SMP_PHASE_IDLE = 3
} smp_connection_phase;

/* ABI 1.10. The answer to query_async: a table, or an error sentence. */
typedef void (*smp_query_done)(void* data, const smp_table* table, const char* error);

/* ABI 1.12. The server's totals a live view shows, summed over every
   worker: what the metrics smprotocol_requests_total,
   smprotocol_sent_bytes_total, smprotocol_connections_open and
   smprotocol_downloads_in_progress hold, without the text. */
typedef struct smp_counters {
    uint32_t size;
    uint64_t requests;   /* requests ended */
    uint64_t sent_bytes; /* response heads and bodies sent */
    int64_t connections_open;
    int64_t downloads_in_progress;
} smp_counters;

typedef struct smp_core_api {
    uint32_t size;
    /* Any process, any thread (the storage thread too); never blocks.
       Logs through the core's logger, prefixed with `module`. */
    void (*log)(smp_log_level level, const char* module, const char* message);
    /* Any process, any thread; never blocks. 1 when `level` is logged:
       skip building a message nobody reads. */
    int (*log_enabled)(smp_log_level level);

    /* The calls below take the smp_worker of init_worker's context: worker
       process only, on the worker's loop thread, inside a loop callback. */

    /* Worker loop; does not block. Progress of a running exchange (throttle
       it: at most about once a second). Runs every plugin's on_transfer
       before it returns. */
    void (*transfer)(smp_worker* worker, const smp_record* record);
    /* Worker loop; does not block. An exchange ended; the final record.
       Exactly once per record. Writes the access log line (buffered) and
       the tracking record, and runs every plugin's on_close, before it
       returns. */
    void (*close)(smp_worker* worker, const smp_record* record);
    /* Worker loop; does not block. The module closed a connection it was
       given by accept. Exactly once per accepted connection, after its last
       close(). Runs every plugin's on_disconnect; the worker may accept
       again, or, stopping, end its loop once the last one is gone. */
    void (*disconnect)(smp_worker* worker, const smp_connection_info* info);
    /* ABI 1.1. Worker loop; does not block. 1 when `ip` is one of the
       configured trusted_proxies, whose X-Forwarded-For / Forwarded may be
       believed. */
    int (*trusted_proxy)(smp_worker* worker, const char* ip);
    /* ABI 1.3. Worker loop; does not block. One of `limit` slots of `key`
       in a counter that plugins share across servers (memcache), held at
       most `ttl_s` seconds (0: the plugin's default). 1: taken, release it
       with limit_release; 0: all taken; -1: no shared counter can answer
       (none configured, or its server is down and the plugin says to fall
       back): use the server's own counters. Asks the first plugin that has
       counters. Since 1.8 it answers only from a plugin with the
       synchronous hook (counter_acquire), and -1 from one that has only the
       asynchronous one (memcache): call limit_acquire_async instead. */
    int (*limit_acquire)(smp_worker* worker, const char* key, uint32_t limit, uint32_t ttl_s);
    /* ABI 1.3. Worker loop; does not block (since 1.8: the plugin queues
       it and does not wait for the answer). Gives back a slot that
       limit_acquire or limit_acquire_async took. A plugin sends it before
       any later acquire of the same key from this worker, so that a slot
       given back is counted free by the next ask. */
    void (*limit_release)(smp_worker* worker, const char* key);
    /* ABI 1.4. Worker loop. A cache of file bodies that plugins share
       across servers (memcache), the first plugin that has one. `key` names
       one version of a file (the module puts its size and mtime in it, so a
       changed file is a new key).
       cache_max_size: does not block. The largest body a plugin would keep;
       0: no cache.
       cache_get: does not block. 1: `size` bytes copied into `buffer` (the
       caller's, at least `size` bytes); 0: not cached; -1: cannot answer
       (too big, or the cache is down). Since 1.8 it answers only from a
       plugin with the synchronous hook, and -1 from one that has only
       cache_get_async (memcache): call cache_get_async instead.
       cache_set: does not block (since 1.8: queued, not waited for).
       Offers a body, borrowed for the call; the plugin copies what it
       keeps. */
    uint64_t (*cache_max_size)(smp_worker* worker);
    int (*cache_get)(smp_worker* worker, const char* key, void* buffer, uint64_t size);
    void (*cache_set)(smp_worker* worker, const char* key, const void* data, uint64_t size);
    /* ABI 1.7. sizeof(smp_config_value) as the core was compiled: the
       stride of the values array given to init_master. */
    uint32_t config_value_size;
    /* ABI 1.8. Worker loop; never blocks. limit_acquire, answered at once
       or later (see "Asynchronous calls" above): 1, 0 or -1 as
       limit_acquire, or SMP_PENDING with `*call` set and the answer to
       `done(data, answer)`. A plugin that has only the synchronous hook
       answers at once. A slot taken by a call cancelled before its answer
       is given back by the plugin. */
    int (*limit_acquire_async)(smp_worker* worker, const char* key, uint32_t limit, uint32_t ttl_s, smp_async_done done,
                               void* data, smp_async** call);
    /* ABI 1.8. Worker loop; never blocks. cache_get, answered at once or
       later: 1, 0 or -1 as cache_get, or SMP_PENDING. While pending, the
       plugin may write into `buffer` (at least `size` bytes, lent until
       `done` has run or the call is cancelled): on a hit the body goes
       straight from the socket into it. */
    int (*cache_get_async)(smp_worker* worker, const char* key, void* buffer, uint64_t size, smp_async_done done,
                           void* data, smp_async** call);
    /* ABI 1.8. Worker loop; never blocks. Cancels a pending
       limit_acquire_async / cache_get_async: its `done` never runs. */
    void (*limit_cancel)(smp_worker* worker, smp_async* call);
    void (*cache_cancel)(smp_worker* worker, smp_async* call);
    /* ABI 1.9. Master, inside init_master only (elsewhere it only logs). A
       warning about the configuration that does not stop it (a certificate
       that expires soon): printed at once, by `-t` too. A message that starts
       with one of the module's keys ("tls.certificate: ...") is reported at
       that key's line, as init_master's errors are. */
    void (*config_warning)(const char* message);

    /* ABI 1.10. Worker loop; does not block. A connection of the module
       moved from one phase to another (see smp_connection_phase): the
       server's metrics count the connections in each. A module reports
       every move of each connection, READING once accepted and NONE
       before its core->disconnect; a module that reports none leaves its
       connections counted as open only. */
    void (*connection_phase)(smp_worker* worker, smp_connection_phase from, smp_connection_phase to);
    /* ABI 1.10. Worker loop; does not block (it reads counters in memory
       the server's processes share). The server's metrics, summed over
       every worker and the stats collector, in Prometheus's text format
       (version 0.0.4): at most `size` bytes are written to `buffer`, the
       NUL included, and the length of the whole text is returned, as
       snprintf does: call again with a larger buffer when it is not less
       than `size`. docs/metrics.md lists them. */
    size_t (*metrics_text)(smp_worker* worker, char* buffer, size_t size);
    /* ABI 1.10. Worker loop; never blocks. The report `query` asked of the
       first store that answers reports (what `smprotocol stats` asks), run
       on a thread of the worker's, not on its loop. `query` is borrowed
       for the call (the core copies it). Returns SMP_PENDING with `*call`
       set, and `done(data, table, NULL)` runs later on the loop with the
       answer, or `done(data, NULL, error)` with a sentence; `table` and
       `error` are borrowed for that call. SMP_ERROR at once, `done` never
       called: no store in the configuration answers reports. One query
       runs at a time per worker; the others wait their turn. */
    int (*query_async)(smp_worker* worker, const smp_query* query, smp_query_done done, void* data, smp_async** call);
    /* ABI 1.10. Worker loop; never blocks. Forgets a pending query_async:
       its `done` never runs (a query already running on its thread
       finishes there, and its answer is dropped). */
    void (*query_cancel)(smp_worker* worker, smp_async* call);
    /* ABI 1.10. Worker loop; does not block. A plugin's call to its server
       failed (memcached down, a reply it could not read): counted in the
       metrics as smprotocol_plugin_errors_total{plugin="<module>"}. */
    void (*plugin_error)(smp_worker* worker, const char* module);
    /* ABI 1.12. Worker loop; does not block. Fills `counters` (its `size`
       set by the caller) with the server's totals now. */
    void (*counters)(smp_worker* worker, smp_counters* counters);
} smp_core_api;

/* The i-th value of the array init_master was given, whatever size of
   smp_config_value the core was built with. */
static inline const smp_config_value* smp_config_value_at(const smp_core_api* core, const smp_config_value* values,
                                                          size_t i) {
    /* A core older than this header refuses the module, so `core` always
       states its stride; the fallback only keeps the function total. */
    const size_t stride = SMP_HAS(core, config_value_size) && core->config_value_size != 0 ? core->config_value_size
                                                                                           : sizeof(smp_config_value);
    return (const smp_config_value*)((const char*)values + i * stride);
}

/* The line of element i of a STRING_LIST value (see list_lines), or the
   value's own line when the core's values are too small to hold list_lines
   (smp_config_value has no `size`: the core's stride says) or i is out of
   the list. For error messages: "tls.certificates[1].key: ..." from
   init_master is reported at that line by the core itself. */
static inline int smp_config_list_line(const smp_core_api* core, const smp_config_value* value, size_t i) {
    const int has_lines = SMP_HAS(core, config_value_size) &&
                          core->config_value_size >= offsetof(smp_config_value, list_lines) + sizeof(value->list_lines);
    return has_lines && value->list_lines != NULL && i < value->list_length ? value->list_lines[i] : value->line;
}

/* What a worker gives a module after fork, in init_worker. An exception to
   "borrowed for the call": this struct, and the loop, worker and node it
   points at, stay valid until the worker's exit_worker has returned, and a
   module keeps them for the worker's life. */
typedef struct smp_worker_context {
    uint32_t size;
    /* The worker's own loop, created after fork and run on this thread. A
       module opens its handles on it and, in exit_worker, closes them all
       or starts what closes them within a bound of its own (a plugin that
       writes its last commands first, within its timeout): the core then
       runs the loop until every close callback has run, and logs a leak if
       any handle is still open. */
    uv_loop_t* loop;
    smp_worker* worker; /* pass back to smp_core_api calls */
    uint32_t worker_id; /* 1..N */
    const char* node;   /* this host's name */
} smp_worker_context;

/* ---- the module ---------------------------------------------------------
 *
 * Hook by hook: REQUIRED or OPTIONAL and for which kind, the process it
 * runs in (see the top of this file), whether it may block, and the
 * lifetime of what it receives. `instance` is what init_master made,
 * `worker_state` what init_worker made (NULL when the module has none) and
 * `collector_state` what init_collector made (the instance when the module
 * has none, or leaves it unset).
 */

typedef struct smp_module {
    uint32_t size;      /* sizeof(smp_module) as the module was compiled */
    uint32_t abi_major; /* SMP_ABI_MAJOR */
    uint32_t abi_minor; /* SMP_ABI_MINOR; more than the core's: refused */
    smp_module_kind kind;
    const char* name; /* equals the .so name and the YAML name */
    const char* description;

    const smp_config_key* config_keys; /* may be NULL when there are none; read while loaded */
    size_t config_key_count;

    /* REQUIRED, every kind. Master, before fork; may block (a reload runs
       it on the master's loop while the old workers serve, so seconds at
       most). Once per configuration entry, at start and at each reload.
       Check the values and build the instance. `core` is kept for the
       process's life; `values` (config_key_count of them, see
       smp_config_value_at) and their strings stay valid until exit_master.
       On failure, write a sentence to `error` and return SMP_ERROR; one
       that starts with a key name and ": " is reported at that key's line:
       "root: ...", "tls.key: ..." (ABI 1.9: at the line of `key:` in
       `tls:`), "tls.certificates[1].key: ..." (at element 1's `key:`, or
       the element's line when it has none), or a map: "tls: ...". */
    int (*init_master)(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                       size_t error_size);
    /* OPTIONAL, every kind. Master, when the configuration is retired: at
       exit, after a reload once the last worker of the old configuration
       has ended, or at once when init_master of any module in the same
       configuration failed; may block briefly. Called only for an instance
       init_master left non-NULL. Never called in workers or the collector:
       they _exit. */
    void (*exit_master)(void* instance);

    /* REQUIRED for protocols, OPTIONAL for plugins. Worker, after fork,
       before its loop runs; may block briefly (during a reload the master
       waits up to 10 s for every new worker to be ready). Build the worker's state.
       `context` is kept for the worker's life (see smp_worker_context).
       SMP_ERROR with a sentence in `error`: the worker exits. */
    int (*init_worker)(void* instance, const smp_worker_context* context, void** worker_state, char* error,
                       size_t error_size);
    /* OPTIONAL, every kind. Worker, once its loop has stopped (every
       connection closed, or shutdown_timeout passed); should not block
       (the master kills a worker that outlives shutdown_timeout). Close
       every handle opened on the loop and free the worker's state. The
       protocol modules' exit_worker runs before the plugins': what a
       protocol cancels or releases as it closes reaches a plugin still
       running. A plugin ignores a cancel_async that comes after its own
       exit_worker (a protocol handle closing in the core's last loop run). */
    void (*exit_worker)(void* worker_state);

    /* Protocols. */
    /* REQUIRED, protocols. Worker loop; must not block. A connection
       accepted on this module's listener, after every plugin's
       on_connection let it in: the module owns `fd` (non-blocking,
       close-on-exec) from now on, even when it returns SMP_ERROR, and calls
       core->disconnect once when it closed it. `info` is borrowed: copy
       what is kept. */
    int (*accept)(void* worker_state, int fd, const smp_connection_info* info);
    /* REQUIRED, protocols. Worker loop; must not block. Graceful stop
       (SIGTERM or a reload): the listeners are closed; close idle
       connections now, let running exchanges finish, then close their
       connections. */
    void (*shutdown)(void* worker_state);

    /* Plugins: all OPTIONAL, at least one of them (or of store, a counter
       or a cache hook) REQUIRED. Worker loop; must not block:
       each runs inside the core call that reports the event, in the
       protocol module's loop callback. The info and record are borrowed. */
    /* A connection was accepted, before the protocol sees it; SMP_REFUSE
       closes it before any byte is read (then on_disconnect follows). */
    int (*on_connection)(void* worker_state, const smp_connection_info* info);
    /* Progress of a running exchange (core->transfer). */
    void (*on_transfer)(void* worker_state, const smp_record* record);
    /* An exchange ended, its final record (core->close). */
    void (*on_close)(void* worker_state, const smp_record* record);
    /* A connection closed (core->disconnect, or a refused one). */
    void (*on_disconnect)(void* worker_state, const smp_connection_info* info);

    /* ABI 1.2. Storage plugins: these run in the stats collector process,
       on the storage thread of this store, one call at a time, never on an
       event loop: they may block (what waits is this store's next batch,
       and a stop of the collector). */
    /* OPTIONAL, plugins. Collector, storage thread; may block. Build the
       collector's state. SMP_ERROR with a sentence in `error`: logged, and
       tried again before each store until it succeeds. */
    int (*init_collector)(void* instance, void** collector_state, char* error, size_t error_size);
    /* OPTIONAL, plugins. Collector, storage thread, at stop, after the last
       store, when init_collector succeeded; may block. */
    void (*exit_collector)(void* collector_state);
    /* OPTIONAL, plugins; a plugin that has it is a store. Collector,
       storage thread; may block. `batch` is borrowed for the call.
       SMP_ERROR with a sentence in `error`: the batch goes to the spool on
       disk and is offered again, in order, until it is stored. */
    int (*store)(void* collector_state, const smp_batch* batch, char* error, size_t error_size);
    /* OPTIONAL, plugins; answers `smprotocol stats`. Master (the stats
       command's own process), after init_master; may block. SMP_ERROR with
       a sentence in `error`. `query` is borrowed; the table is the module's
       until free_table. */
    int (*query)(void* instance, const smp_query* query, smp_table** table, char* error, size_t error_size);
    /* REQUIRED with query (the loader refuses one without the other). Same
       process; frees what query returned. */
    void (*free_table)(void* instance, smp_table* table);

    /* ABI 1.3. OPTIONAL, plugins. Shared counters, asked by
       core->limit_acquire / limit_release (the same meaning and return
       values). Worker loop: they must not block. counter_release comes
       with counter_acquire or counter_acquire_async (1.8), and is queued
       rather than waited for. A plugin that waits on the network has only
       the asynchronous acquire (memcache); counter_acquire is for one that
       answers from memory. */
    int (*counter_acquire)(void* worker_state, const char* key, uint32_t limit, uint32_t ttl_s);
    void (*counter_release)(void* worker_state, const char* key);

    /* ABI 1.4. OPTIONAL, plugins. A shared cache of file bodies, asked by
       core->cache_max_size / cache_get / cache_set (the same meaning and
       return values; `buffer` and `data` are borrowed). Worker loop: they
       must not block. cache_max_size and cache_set come with cache_get or
       cache_get_async (1.8); cache_set copies the body and does not wait. */
    uint64_t (*cache_max_size)(void* worker_state);
    int (*cache_get)(void* worker_state, const char* key, void* buffer, uint64_t size);
    void (*cache_set)(void* worker_state, const char* key, const void* data, uint64_t size);

    /* ABI 1.5. OPTIONAL, every kind. Master, on its loop: must not block.
       A worker process (of this configuration or of any other still
       running, during a reload) has ended and been reaped. A module that
       keeps state in memory its workers share frees what `pid` held there
       (slots of a limit), so that nothing waits on a process that is gone
       and a later process given the same pid inherits nothing. Called for
       every loaded instance, before the master forks a replacement. */
    void (*worker_gone_master)(void* instance, int pid);

    /* ABI 1.5. OPTIONAL, protocols. Worker loop; must not block. The
       worker holds max_connections connections and has stopped accepting,
       while new ones wait in the listen backlog. Close up to `count` of
       this module's connections that are cheapest to lose (idle between
       requests, or a request head still arriving long after it began),
       oldest first, and return how many are closing (0..count, not an
       smp_status); their core->disconnect follows, and the worker accepts
       again (nginx's reusable connections). */
    int (*reclaim)(void* worker_state, int count);

    /* ABI 1.7, set by SMP_MODULE_INIT / smp_module_stamp. UV_VERSION_HEX
       of the libuv headers the module was compiled with; the core refuses
       the module unless the running libuv (uv_version()) has the same
       major and at least its minor. 0 is refused. */
    uint32_t uv_version;
    /* ABI 1.7, set by SMP_MODULE_INIT / smp_module_stamp.
       sizeof(smp_config_key) as the module was compiled: the stride of
       config_keys. 0: the 1.0 size. */
    uint32_t config_key_size;

    /* ABI 1.8. OPTIONAL, plugins. The asynchronous forms of counter_acquire
       and cache_get, asked by core->limit_acquire_async / cache_get_async,
       with their meaning (see "Asynchronous calls" above). Worker loop;
       never block: a plugin that waits on the network answers SMP_PENDING
       and calls `done` from its own loop callback, within its timeout. A
       plugin that has either has cancel_async (the loader refuses one
       without), which forgets a pending call: `done` never runs, `buffer`
       is not touched again, and a slot the call took is given back. */
    int (*counter_acquire_async)(void* worker_state, const char* key, uint32_t limit, uint32_t ttl_s,
                                 smp_async_done done, void* data, smp_async** call);
    int (*cache_get_async)(void* worker_state, const char* key, void* buffer, uint64_t size, smp_async_done done,
                           void* data, smp_async** call);
    void (*cancel_async)(void* worker_state, smp_async* call);

    /* ABI 1.12. OPTIONAL, plugins with store. Collector, storage thread,
       between batches; may block, briefly: tracking.retention. Delete at
       most `max_rows` of the stored requests that started, and of the
       finished downloads last active, before `before_us`, and set *purged
       to how many were deleted. The core calls it at start and once a
       day, again and again while *purged == max_rows, with the next batch
       stored between two calls, so no call holds the store for long.
       Per-day totals a store keeps are never deleted. SMP_ERROR with a
       sentence in `error`: logged, tried again at the next purge. */
    int (*purge)(void* collector_state, int64_t before_us, uint32_t max_rows, uint32_t* purged, char* error,
                 size_t error_size);
} smp_module;

/* C: the first designated initializers of a module's static struct, the
   fields the core checks at load, stamped as this module is compiled:

       static const smp_module module = {
           SMP_MODULE_INIT,
           .kind = SMP_MODULE_PLUGIN,
           .name = "x",
           ...
       };

   C++ requires designators in declaration order, which this cannot follow
   (uv_version is at the end): call smp_module_stamp() instead. */
#define SMP_MODULE_INIT                                                                                               \
    .size = sizeof(smp_module), .abi_major = SMP_ABI_MAJOR, .abi_minor = SMP_ABI_MINOR, .uv_version = UV_VERSION_HEX, \
    .config_key_size = sizeof(smp_config_key)

/* C or C++: the same fields as SMP_MODULE_INIT, set on a module struct. */
static inline void smp_module_stamp(smp_module* module) {
    module->size = (uint32_t)sizeof(smp_module);
    module->abi_major = SMP_ABI_MAJOR;
    module->abi_minor = SMP_ABI_MINOR;
    module->uv_version = UV_VERSION_HEX;
    module->config_key_size = (uint32_t)sizeof(smp_config_key);
}

/* The smallest module struct the core accepts: everything up to on_disconnect. */
#define SMP_MODULE_MIN_SIZE (offsetof(smp_module, on_disconnect) + sizeof(void*))

/* A hook of a later ABI minor than the module may know: NULL when its
   struct is too small to hold it. */
#define SMP_MODULE_HOOK(module, field) (SMP_HAS(module, field) ? (module)->field : NULL)

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
        case SMP_END_LINK_EXPIRED: return "link_expired";
    }
    return "unknown";
}

#ifdef __cplusplus
}
#endif

#endif /* SMP_MODULE_H */
