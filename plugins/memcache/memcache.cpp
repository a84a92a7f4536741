// memcache: counters shared by every smprotocol server that names the same
// memcached servers, so that the limits of http_download (unique_ip,
// max_connections_per_ip) hold across a cluster; and a cache of small file
// bodies those servers share (cache_max_file_size). libmemcached, one client
// per worker made after fork, consistent (ketama) hashing over the servers,
// tight timeouts: a call holds a worker's loop for milliseconds at most.
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then worker), and the registration struct last.
#include <libmemcached/memcached.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "smp_module.h"

namespace {

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

// memcached's own limits: a key of at most 250 bytes, and by default an item
// of at most 1 MiB (its -I option) with its header.
constexpr size_t kMaxKeyLength = 250;
constexpr uint64_t kMaxCachedFile = 1024 * 1024 - 1024;

struct Server {
    std::string host;
    in_port_t port = 11211;
};

struct Settings {
    const smp_core_api* core = nullptr;
    std::vector<Server> servers;
    std::string prefix;
    bool deny_on_error = false;
    uint32_t slot_ttl_s = 3600;
    uint64_t timeout_ms = 50;
    uint64_t cache_max_file_size = 0;
};

// ---- worker state ---------------------------------------------------------------

struct MemcachedCloser {
    void operator()(memcached_st* memc) const noexcept { memcached_free(memc); }
};

struct Client {
    const Settings* settings = nullptr;
    std::unique_ptr<memcached_st, MemcachedCloser> memc;
    bool failing = false;  // logged once per outage
};

void log(const Settings& settings, smp_log_level level, const std::string& message) {
    settings.core->log(level, "memcache", message.c_str());
}

// Notes the outcome of a call: one line when an outage starts and one when it
// ends. An answer that refuses (an item too big, say) is not an outage.
// True when the call did what was asked.
bool check(Client& client, memcached_return_t rc, const char* doing) {
    const bool ok = !memcached_fatal(rc);
    if (!ok && !client.failing)
        log(*client.settings, SMP_LOG_ERROR,
            std::string("cannot ") + doing + ": " + memcached_strerror(client.memc.get(), rc) +
                (client.settings->deny_on_error ? "; refusing what needs a shared slot until it answers"
                                                : "; each server uses its own limits until it answers"));
    if (ok && client.failing) log(*client.settings, SMP_LOG_INFO, "memcached answers again: limits are shared again");
    client.failing = !ok;
    return memcached_success(rc);
}

std::string full_key(const Client& client, const char* key) { return client.settings->prefix + key; }

// ---- master hooks -------------------------------------------------------------

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    try {
        auto settings = std::make_unique<Settings>();
        settings->core = core;
        for (size_t i = 0; i < values[kServers].list_length; ++i) {
            const std::string text = values[kServers].list[i];
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
            settings->servers.push_back(server);
        }
        if (settings->servers.empty()) return std::snprintf(error, error_size, "servers: name one at least"), SMP_ERROR;
        settings->prefix = values[kPrefix].string;
        if (settings->prefix.size() > 64 || settings->prefix.find_first_of(" \t\r\n") != std::string::npos)
            return std::snprintf(error, error_size, "prefix: at most 64 characters, no spaces"), SMP_ERROR;
        const std::string on_error = values[kOnError].string;
        if (on_error != "allow" && on_error != "deny")
            return std::snprintf(error, error_size, "on_error: must be allow or deny"), SMP_ERROR;
        settings->deny_on_error = on_error == "deny";
        if (values[kSlotTtl].number < 1000)
            return std::snprintf(error, error_size, "slot_ttl: must be at least 1s"), SMP_ERROR;
        settings->slot_ttl_s = static_cast<uint32_t>(values[kSlotTtl].number / 1000);
        if (values[kTimeout].number < 1)
            return std::snprintf(error, error_size, "timeout: must be more than 0"), SMP_ERROR;
        settings->timeout_ms = static_cast<uint64_t>(values[kTimeout].number);
        if (values[kCacheMaxFileSize].number < 0 ||
            static_cast<uint64_t>(values[kCacheMaxFileSize].number) > kMaxCachedFile)
            return std::snprintf(error, error_size,
                                 "cache_max_file_size: at most %llu bytes (memcached's item size, with its header)",
                                 static_cast<unsigned long long>(kMaxCachedFile)),
                   SMP_ERROR;
        settings->cache_max_file_size = static_cast<uint64_t>(values[kCacheMaxFileSize].number);
        *instance = settings.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void exit_master(void* instance) { delete static_cast<Settings*>(instance); }

// ---- worker hooks ---------------------------------------------------------------

int init_worker(void* instance, const smp_worker_context* /*context*/, void** worker_state, char* error,
                size_t error_size) {
    try {
        auto client = std::make_unique<Client>();
        client->settings = static_cast<const Settings*>(instance);
        const Settings& s = *client->settings;
        client->memc.reset(memcached_create(nullptr));
        if (!client->memc) return std::snprintf(error, error_size, "cannot make a memcached client"), SMP_ERROR;
        memcached_st* memc = client->memc.get();
        // Counters with an initial value and an expiry need the binary protocol.
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA, 1);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, s.timeout_ms);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, s.timeout_ms);
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);  // a dead server is tried again after 1 s
        for (const Server& server : s.servers) {
            const memcached_return_t rc = memcached_server_add(memc, server.host.c_str(), server.port);
            if (!memcached_success(rc))
                return std::snprintf(error, error_size, "servers: %s: %s", server.host.c_str(),
                                     memcached_strerror(memc, rc)),
                       SMP_ERROR;
        }
        *worker_state = client.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void exit_worker(void* worker_state) { delete static_cast<Client*>(worker_state); }

// One of `limit` slots of `key`: incr (created at 1 with the slot's expiry);
// past the limit, decr back and refuse. One round trip when admitted.
int counter_acquire(void* worker_state, const char* key, uint32_t limit, uint32_t ttl_s) {
    auto& client = *static_cast<Client*>(worker_state);
    const std::string name = full_key(client, key);
    const time_t expiry = ttl_s > 0 ? ttl_s : client.settings->slot_ttl_s;
    uint64_t value = 0;
    memcached_return_t rc =
        memcached_increment_with_initial(client.memc.get(), name.data(), name.size(), 1, 1, expiry, &value);
    if (!check(client, rc, "take a shared slot")) return client.settings->deny_on_error ? 0 : -1;
    if (value <= limit) return 1;
    rc = memcached_decrement(client.memc.get(), name.data(), name.size(), 1, &value);
    check(client, rc, "give back a shared slot");
    return 0;
}

void counter_release(void* worker_state, const char* key) {
    auto& client = *static_cast<Client*>(worker_state);
    const std::string name = full_key(client, key);
    uint64_t value = 0;
    // Answered, on the same connection as the acquires: a release must be
    // counted before an acquire that follows it (a dead worker's slot given
    // back, then taken again).
    check(client, memcached_decrement(client.memc.get(), name.data(), name.size(), 1, &value),
          "give back a shared slot");
}

uint64_t cache_max_size(void* worker_state) {
    return static_cast<const Client*>(worker_state)->settings->cache_max_file_size;
}

// A file body, when memcached has this version of the file: the key names its
// size and mtime, so a changed file is never served from here.
int cache_get(void* worker_state, const char* key, void* buffer, uint64_t size) {
    auto& client = *static_cast<Client*>(worker_state);
    const std::string name = full_key(client, key);
    if (size > client.settings->cache_max_file_size || name.size() > kMaxKeyLength) return -1;
    size_t length = 0;
    uint32_t flags = 0;
    memcached_return_t rc = MEMCACHED_SUCCESS;
    std::unique_ptr<char, decltype(&std::free)> value(
        memcached_get(client.memc.get(), name.data(), name.size(), &length, &flags, &rc), &std::free);
    if (rc == MEMCACHED_NOTFOUND) return 0;
    if (!check(client, rc, "read the file cache")) return -1;
    if (value == nullptr || length != size) return 0;  // not what the key promised: read the file
    std::memcpy(buffer, value.get(), size);
    return 1;
}

void cache_set(void* worker_state, const char* key, const void* data, uint64_t size) {
    auto& client = *static_cast<Client*>(worker_state);
    const std::string name = full_key(client, key);
    if (size > client.settings->cache_max_file_size || name.size() > kMaxKeyLength) return;
    // No expiry: an old version of a file is never asked for again, and
    // memcached's LRU lets it go.
    check(client,
          memcached_set(client.memc.get(), name.data(), name.size(), static_cast<const char*>(data), size, 0, 0),
          "fill the file cache");
}

}  // namespace

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PLUGIN;
        m.name = "memcache";
        m.description = "limits and a file cache shared across servers, in memcached (libmemcached)";
        m.config_keys = kKeys;
        m.config_key_count = kKeyCount;
        m.init_master = init_master;
        m.exit_master = exit_master;
        m.init_worker = init_worker;
        m.exit_worker = exit_worker;
        m.counter_acquire = counter_acquire;
        m.counter_release = counter_release;
        m.cache_max_size = cache_max_size;
        m.cache_get = cache_get;
        m.cache_set = cache_set;
        return m;
    }();
    return &module;
}
