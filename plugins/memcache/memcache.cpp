// memcache: counters shared by every smprotocol server that names the same
// memcached servers, so that the limits of http_download (unique_ip,
// max_connections_per_ip) hold across a cluster; and a cache of small file
// bodies those servers share (cache_max_file_size).
//
// Nothing here waits on the network: acquires and gets are the asynchronous
// hooks of ABI 1.8, answered later from the worker's own loop by a meta
// protocol client (meta_client.cpp) that keeps one connection per server and
// worker, sends every command of a loop turn in one write and has many
// replies outstanding at once. Server names are resolved once, in the
// master. A key picks its server by libmemcached's consistent (ketama)
// hashing, exactly as when libmemcached was the client, so that servers of
// both versions count a key on the same memcached; libmemcached is only
// asked to hash (it never connects).
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then worker), and the registration struct last.
#include <libmemcached/memcached.h>
#include <netdb.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "meta_client.hpp"
#include "smp_module.h"

namespace {

using smp::memcache::ClientOptions;
using smp::memcache::is_key_text;
using smp::memcache::MetaClient;
using smp::memcache::ServerAddress;

// ---- config -----------------------------------------------------------------

enum Key : size_t { kServers, kPrefix, kOnError, kSlotTtl, kTimeout, kCacheMaxFileSize, kKeyCount };

constexpr smp_config_key kKeys[kKeyCount] = {
    {"servers", SMP_CONFIG_STRING_LIST, nullptr, 1, "memcached servers, \"host:port\", spread by consistent hashing"},
    {"prefix", SMP_CONFIG_STRING, "\"smp:\"", 0, "prefix of every key, to share memcached with other users"},
    {"on_error", SMP_CONFIG_STRING, "allow", 0,
     "memcached unreachable: allow (each server's own limits) or deny (refuse what needs a slot)"},
    {"slot_ttl", SMP_CONFIG_DURATION, "1h", 0, "a slot not given back (its server died) expires after this"},
    {"timeout", SMP_CONFIG_DURATION, "50ms", 0, "connect and reply timeout of one call"},
    {"cache_max_file_size", SMP_CONFIG_SIZE, "0", 0,
     "files up to this size are served from memcached, shared by the servers; 0: no cache"},
};

// memcached's default item size (its -I option), less room for its header.
constexpr uint64_t kMaxCachedFile = 1024 * 1024 - 1024;

struct Server {
    std::string host;
    in_port_t port = 11211;
};

struct MemcachedCloser {
    void operator()(memcached_st* memc) const noexcept { memcached_free(memc); }
};

struct Settings {
    const smp_core_api* core = nullptr;
    std::vector<Server> servers;
    std::vector<ServerAddress> addresses;  // resolved, in the order of `servers`
    // Only hashes keys to servers: made with the servers and behaviours the
    // libmemcached client had, so that its continuum is the same.
    std::unique_ptr<memcached_st, MemcachedCloser> hashing;
    std::string prefix;
    bool deny_on_error = false;
    uint32_t slot_ttl_s = 3600;
    uint64_t timeout_ms = 50;
    uint64_t cache_max_file_size = 0;
};

struct WorkerState {
    const Settings* settings = nullptr;
    MetaClient* client = nullptr;  // frees itself, then this, once its handles have closed
    std::string key;               // the last full key, kept for its room
};

// The address of `server`, or the resolver's sentence.
std::string resolve(const Server& server, sockaddr_storage& address) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const std::string port = std::to_string(server.port);
    if (const int error = getaddrinfo(server.host.c_str(), port.c_str(), &hints, &found); error != 0)
        return gai_strerror(error);
    std::memcpy(&address, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    return {};
}

// The prefix and `key`, in a string kept from call to call: no allocation.
std::string_view full_key(WorkerState& state, const char* key) {
    state.key.assign(state.settings->prefix);
    state.key.append(key);
    return state.key;
}

// ---- master hooks -------------------------------------------------------------

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    try {
        const auto value = [&](Key key) { return smp_config_value_at(core, values, key); };
        auto settings = std::make_unique<Settings>();
        settings->core = core;
        for (size_t i = 0; i < value(kServers)->list_length; ++i) {
            const std::string text = value(kServers)->list[i];
            const auto colon = text.rfind(':');
            Server server{text.substr(0, colon), 11211};
            if (colon != std::string::npos) {
                char* end = nullptr;
                const long port = std::strtol(text.c_str() + colon + 1, &end, 10);
                if (*end != '\0' || port < 1 || port > 65535)
                    return std::snprintf(error, error_size, "servers: '%s' is not host:port", text.c_str()), SMP_ERROR;
                server.port = static_cast<in_port_t>(port);
            }
            if (server.host.empty())
                return std::snprintf(error, error_size, "servers: '%s' has no host", text.c_str()), SMP_ERROR;
            // Here, where blocking is fine: a worker's loop never waits on DNS.
            ServerAddress address{text, {}};
            if (const std::string why = resolve(server, address.address); !why.empty())
                return std::snprintf(error, error_size, "servers: '%s': %s", text.c_str(), why.c_str()), SMP_ERROR;
            settings->servers.push_back(server);
            settings->addresses.push_back(address);
        }
        if (settings->servers.empty()) return std::snprintf(error, error_size, "servers: name one at least"), SMP_ERROR;
        settings->prefix = value(kPrefix)->string;
        if (settings->prefix.size() > 64 || !is_key_text(settings->prefix))
            return std::snprintf(error, error_size, "prefix: at most 64 characters, printable ASCII, no spaces"),
                   SMP_ERROR;
        const std::string on_error = value(kOnError)->string;
        if (on_error != "allow" && on_error != "deny")
            return std::snprintf(error, error_size, "on_error: must be allow or deny"), SMP_ERROR;
        settings->deny_on_error = on_error == "deny";
        if (value(kSlotTtl)->number < 1000)
            return std::snprintf(error, error_size, "slot_ttl: must be at least 1s"), SMP_ERROR;
        settings->slot_ttl_s = static_cast<uint32_t>(value(kSlotTtl)->number / 1000);
        if (value(kTimeout)->number < 1)
            return std::snprintf(error, error_size, "timeout: must be more than 0"), SMP_ERROR;
        settings->timeout_ms = static_cast<uint64_t>(value(kTimeout)->number);
        if (value(kCacheMaxFileSize)->number < 0 ||
            static_cast<uint64_t>(value(kCacheMaxFileSize)->number) > kMaxCachedFile)
            return std::snprintf(error, error_size,
                                 "cache_max_file_size: at most %llu bytes (memcached's item size, with its header)",
                                 static_cast<unsigned long long>(kMaxCachedFile)),
                   SMP_ERROR;
        settings->cache_max_file_size = static_cast<uint64_t>(value(kCacheMaxFileSize)->number);

        // The behaviours and servers of the libmemcached client this plugin
        // was, in the same order: they alone make its ketama continuum.
        // Adding a server by name stores the name; nothing connects or
        // resolves until a command, and none is ever sent through it.
        settings->hashing.reset(memcached_create(nullptr));
        memcached_st* memc = settings->hashing.get();
        if (memc == nullptr) return std::snprintf(error, error_size, "cannot make a memcached client"), SMP_ERROR;
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA, 1);
        for (const Server& server : settings->servers) {
            const memcached_return_t rc = memcached_server_add(memc, server.host.c_str(), server.port);
            if (!memcached_success(rc))
                return std::snprintf(error, error_size, "servers: %s: %s", server.host.c_str(),
                                     memcached_strerror(memc, rc)),
                       SMP_ERROR;
        }
        *instance = settings.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void exit_master(void* instance) { delete static_cast<Settings*>(instance); }

// ---- worker hooks ---------------------------------------------------------------

int init_worker(void* instance, const smp_worker_context* context, void** worker_state, char* error,
                size_t error_size) {
    try {
        const auto* settings = static_cast<const Settings*>(instance);
        ClientOptions options;
        options.servers = settings->addresses;
        const memcached_st* memc = settings->hashing.get();
        options.pick = [memc](std::string_view key) {
            return static_cast<size_t>(memcached_generate_hash(memc, key.data(), key.size()));
        };
        options.timeout_ms = settings->timeout_ms;
        options.acquire_unanswered = settings->deny_on_error ? 0 : -1;
        options.outage_note = settings->deny_on_error ? "refusing what needs a shared slot until it answers"
                                                      : "each server uses its own limits until it answers";
        const smp_core_api* core = settings->core;
        options.log = [core](smp_log_level level, const std::string& message) {
            core->log(level, "memcache", message.c_str());
        };
        // Counted in the server's metrics (ABI 1.10): smprotocol_plugin_errors_total.
        smp_worker* worker = context->worker;
        options.error = [core, worker] {
            if (SMP_HAS(core, plugin_error)) core->plugin_error(worker, "memcache");
        };
        auto state = std::make_unique<WorkerState>();
        state->settings = settings;
        WorkerState* kept = state.get();
        options.closed = [kept] { delete kept; };
        state->client = new MetaClient(context->loop, std::move(options));
        *worker_state = state.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

// The releases queued until now still reach memcached: the client writes
// them and closes its connections within `timeout`, on the loop the core
// runs after this. The state is freed in the client's last close callback,
// so that a cancel that comes meanwhile (a connection of a protocol closing
// on that loop) finds it, and does nothing.
void exit_worker(void* worker_state) { static_cast<WorkerState*>(worker_state)->client->close(); }

// One of `limit` slots of `key`: the counter goes up by one (created at 1
// with the slot's expiry); past the limit the client takes it down again and
// answers 0.
int counter_acquire_async(void* worker_state, const char* key, uint32_t limit, uint32_t ttl_s, smp_async_done done,
                          void* data, smp_async** call) {
    auto& state = *static_cast<WorkerState*>(worker_state);
    try {
        const uint32_t ttl = ttl_s > 0 ? ttl_s : state.settings->slot_ttl_s;
        return state.client->acquire(full_key(state, key), limit, ttl, done, data, call);
    } catch (const std::exception&) {
        return state.settings->deny_on_error ? 0 : -1;
    }
}

// Queued on the connection the acquires of `key` use: memcached counts it
// before any acquire this worker asks later.
void counter_release(void* worker_state, const char* key) {
    auto& state = *static_cast<WorkerState*>(worker_state);
    try {
        state.client->release(full_key(state, key));
    } catch (const std::exception&) {
        // Out of memory: the slot expires after slot_ttl.
    }
}

uint64_t cache_max_size(void* worker_state) {
    return static_cast<const WorkerState*>(worker_state)->settings->cache_max_file_size;
}

// A file body, when memcached has this version of the file: the key names its
// size and mtime, so a changed file is never served from here. A hit goes
// straight into `buffer`.
int cache_get_async(void* worker_state, const char* key, void* buffer, uint64_t size, smp_async_done done, void* data,
                    smp_async** call) {
    auto& state = *static_cast<WorkerState*>(worker_state);
    if (size > state.settings->cache_max_file_size) return -1;
    try {
        return state.client->get(full_key(state, key), buffer, size, done, data, call);
    } catch (const std::exception&) {
        return -1;
    }
}

// No expiry: an old version of a file is never asked for again, and
// memcached's LRU lets it go.
void cache_set(void* worker_state, const char* key, const void* data, uint64_t size) {
    auto& state = *static_cast<WorkerState*>(worker_state);
    if (size > state.settings->cache_max_file_size) return;
    try {
        state.client->set(full_key(state, key), data, size);
    } catch (const std::exception&) {
        // Out of memory: not cached.
    }
}

void cancel_async(void* worker_state, smp_async* call) {
    static_cast<WorkerState*>(worker_state)->client->cancel(call);
}

}  // namespace

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PLUGIN;
        m.name = "memcache";
        m.description = "limits and a file cache shared across servers, in memcached (meta protocol, on the loop)";
        m.config_keys = kKeys;
        m.config_key_count = kKeyCount;
        m.init_master = init_master;
        m.exit_master = exit_master;
        m.init_worker = init_worker;
        m.exit_worker = exit_worker;
        m.counter_release = counter_release;
        m.cache_max_size = cache_max_size;
        m.cache_set = cache_set;
        m.counter_acquire_async = counter_acquire_async;
        m.cache_get_async = cache_get_async;
        m.cancel_async = cancel_async;
        return m;
    }();
    return &module;
}
