// dashboard: the server's statistics, seen. On its own listener: Prometheus
// metrics at /metrics, the reports of `smprotocol stats` as JSON under
// /api/v1/, a live stream of them (/api/v1/live), and the HTML page that
// shows them (/). Off unless named in the configuration (docs/dashboard.md).
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then worker), and the registration struct last.
#include <array>
#include <cstdio>
#include <new>

#include "server.hpp"

namespace smp::dashboard {
namespace {

// ---- config -----------------------------------------------------------------

enum Key : size_t { kAllow, kToken, kCache, kKeepaliveTimeout, kLiveInterval, kKeyCount };

constexpr std::array<smp_config_key, kKeyCount> kKeys{{
    {"allow", SMP_CONFIG_STRING_LIST, "[127.0.0.1/32, '::1/128']", 0,
     "networks whose clients may connect (CIDR or single addresses); others get 403"},
    {"token", SMP_CONFIG_STRING, "''", 0,
     "when set, required as 'Authorization: Bearer TOKEN' (or ?access_token=TOKEN); else 403"},
    {"cache", SMP_CONFIG_DURATION, "1s", 0, "how long a report's answer is reused before the store is asked again"},
    {"keepalive_timeout", SMP_CONFIG_DURATION, "60s", 0, "an idle connection is closed after this"},
    {"live_interval", SMP_CONFIG_DURATION, "1s", 0, "how often the live stream sends an update"},
}};

// ---- master -----------------------------------------------------------------

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    auto* settings = new (std::nothrow) Settings;
    if (settings == nullptr) return std::snprintf(error, error_size, "out of memory"), SMP_ERROR;
    settings->core = core;
    const smp_config_value& allow = *smp_config_value_at(core, values, kAllow);
    for (size_t i = 0; i < allow.list_length; ++i)
        if (!settings->allow.add(allow.list[i])) {
            std::snprintf(error, error_size, "allow: '%s' is not an address or network (127.0.0.1/32, ::1)",
                          allow.list[i]);
            delete settings;
            return SMP_ERROR;
        }
    settings->token = smp_config_value_at(core, values, kToken)->string;
    settings->cache_ms = static_cast<uint64_t>(smp_config_value_at(core, values, kCache)->number);
    settings->keepalive_timeout_ms =
        static_cast<uint64_t>(smp_config_value_at(core, values, kKeepaliveTimeout)->number);
    settings->live_interval_ms = static_cast<uint64_t>(smp_config_value_at(core, values, kLiveInterval)->number);
    if (settings->live_interval_ms < 100) {
        std::snprintf(error, error_size, "live_interval: must be at least 100ms");
        delete settings;
        return SMP_ERROR;
    }
    *instance = settings;
    return SMP_OK;
}

void exit_master(void* instance) { delete static_cast<Settings*>(instance); }

// ---- worker -----------------------------------------------------------------

using Hooks = smp::protocol::WorkerHooks<WorkerState, Settings>;

void exit_worker(void* worker_state) { static_cast<WorkerState*>(worker_state)->close_all_handles(); }

}  // namespace
}  // namespace smp::dashboard

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PROTOCOL;
        m.name = "dashboard";
        m.description = "the statistics seen: Prometheus metrics, a JSON API and a live HTML page";
        m.config_keys = smp::dashboard::kKeys.data();
        m.config_key_count = smp::dashboard::kKeys.size();
        m.init_master = smp::dashboard::init_master;
        m.exit_master = smp::dashboard::exit_master;
        m.init_worker = smp::dashboard::Hooks::init;
        m.exit_worker = smp::dashboard::exit_worker;
        m.accept = smp::dashboard::Hooks::accept;
        m.shutdown = smp::dashboard::Hooks::shutdown;
        return m;
    }();
    return &module;
}
