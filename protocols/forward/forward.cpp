// forward: puts the server in front of another one (the origin) and records
// what it serves. In http mode each request and its response are relayed and
// recorded like a local download (path, status, range, ETag, the file bytes
// the client took); in tcp mode the bytes of a connection are relayed as they
// are, and the connection is recorded.
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then worker), and the registration struct last.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <new>

#include "connection.hpp"

namespace smp::forward {
namespace {

// ---- config -----------------------------------------------------------------

enum Key : size_t {
    kForwardHost,
    kForwardPort,
    kMode,
    kConnectTimeout,
    kReadTimeout,
    kSendTimeout,
    kHeaderTimeout,
    kKeepaliveTimeout,
    kMaxHeaderSize,
    kBufferSize,
    kUniqueIp,
    kMaxConnectionsPerIp,
    kLimitRate,
    kLimitRateAfter,
    kForwardTls,
    kForwardCa,
    kForwardTlsName,
    kTls,  // the tls.* keys of every protocol module (tls.hpp) follow
};

constexpr std::array<smp_config_key, kTls> kOwnKeys = {{
    {"forward_host", SMP_CONFIG_STRING, nullptr, 1, "the origin's address or name (resolved once, at start)"},
    {"forward_port", SMP_CONFIG_INT, nullptr, 1, "the origin's port"},
    {"mode", SMP_CONFIG_STRING, "http", 0,
     "http: relay and record each request; tcp: relay the bytes of each connection unchanged"},
    {"connect_timeout", SMP_CONFIG_DURATION, "5s", 0, "time to open a connection to the origin (then 504, or a close)"},
    {"read_timeout", SMP_CONFIG_DURATION, "60s", 0,
     "time the origin may owe a byte (its response, or the rest of it); tcp: time both sides may stay silent"},
    {"send_timeout", SMP_CONFIG_DURATION, "60s", 0, "time a peer may take no byte while bytes wait for it"},
    {"header_timeout", SMP_CONFIG_DURATION, "10s", 0, "http: time to receive a request's header block"},
    {"keepalive_timeout", SMP_CONFIG_DURATION, "75s", 0, "http: idle time allowed between requests"},
    {"max_header_size", SMP_CONFIG_SIZE, "8KiB", 0, "http: request line and header fields; longer gets 414 or 431"},
    {"buffer_size", SMP_CONFIG_SIZE, "64KiB", 0,
     "bytes held per direction; a side is not read while this much waits for the other"},
    {"unique_ip", SMP_CONFIG_BOOL, "false", 0,
     "http: refuse (429) a second concurrent download (GET) of the same path by the same client IP"},
    {"max_connections_per_ip", SMP_CONFIG_INT, "0", 0,
     "open connections one client IP may hold; past it http requests get 429, tcp connections are closed (0: no "
     "limit)"},
    {"limit_rate", SMP_CONFIG_SIZE, "0", 0,
     "http: body bytes per second of one response, after limit_rate_after (0: none)"},
    {"limit_rate_after", SMP_CONFIG_SIZE, "0", 0,
     "http: bytes of a response's body sent at full speed before limit_rate"},
    {"forward_tls", SMP_CONFIG_BOOL, "false", 0,
     "speak TLS to the origin, checking its certificate for forward_host (a name, or an IP address)"},
    {"forward_ca", SMP_CONFIG_STRING, nullptr, 0,
     "PEM file of the CA certificates that vouch for the origin (none: the system's, /etc/ssl/certs)"},
    {"forward_tls_name", SMP_CONFIG_STRING, nullptr, 0,
     "the name sent as SNI and looked for in the origin's certificate (none: forward_host), as nginx's proxy_ssl_name"},
}};
constexpr auto kKeys = smp::tls::with_tls_keys(kOwnKeys);

constexpr uint64_t kSweepIntervalMs = 250;

// Reads the table's values into `settings`; false with a message when one
// is out of range or the origin's name does not resolve.
bool read_settings(const smp_config_value* values, Settings& settings, char* error, size_t error_size) {
    // "key: problem": the core reports it at the key's line.
    auto fail = [&](const char* key, const char* problem) {
        std::snprintf(error, error_size, "%s: %s", key, problem);
        return false;
    };
    const std::string mode = values[kMode].string;
    if (mode == "http")
        settings.mode = Mode::http;
    else if (mode == "tcp")
        settings.mode = Mode::tcp;
    else
        return fail("mode", "must be http or tcp");
    if (values[kForwardPort].number < 1 || values[kForwardPort].number > 65535)
        return fail("forward_port", "must be between 1 and 65535");
    for (Key key : {kConnectTimeout, kReadTimeout, kSendTimeout, kHeaderTimeout, kKeepaliveTimeout})
        if (values[key].number < 1) return fail(kKeys[key].name, "must be more than 0");
    settings.connect_timeout_ms = static_cast<uint64_t>(values[kConnectTimeout].number);
    settings.read_timeout_ms = static_cast<uint64_t>(values[kReadTimeout].number);
    settings.send_timeout_ms = static_cast<uint64_t>(values[kSendTimeout].number);
    settings.header_timeout_ms = static_cast<uint64_t>(values[kHeaderTimeout].number);
    settings.keepalive_timeout_ms = static_cast<uint64_t>(values[kKeepaliveTimeout].number);
    settings.max_header_size = static_cast<size_t>(values[kMaxHeaderSize].number);
    settings.buffer_size = static_cast<size_t>(values[kBufferSize].number);
    if (settings.max_header_size < 1024 || settings.max_header_size > 1024 * 1024)
        return fail("max_header_size", "must be between 1KiB and 1MiB");
    if (settings.buffer_size < 4096 || settings.buffer_size > 64 * 1024 * 1024)
        return fail("buffer_size", "must be between 4KiB and 64MiB");
    if (settings.buffer_size < settings.max_header_size) return fail("buffer_size", "must be at least max_header_size");

    // Resolved here, in the master, where blocking is allowed: a worker never
    // waits for a name server.
    const char* host = values[kForwardHost].string;
    const std::string port = std::to_string(values[kForwardPort].number);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int resolved = getaddrinfo(host, port.c_str(), &hints, &found);
    if (resolved != 0 || found == nullptr) {
        char problem[300];
        std::snprintf(problem, sizeof problem, "cannot resolve '%s': %s", host, gai_strerror(resolved));
        return fail("forward_host", problem);
    }
    std::memcpy(&settings.origin, found->ai_addr, found->ai_addrlen);
    settings.origin_length = found->ai_addrlen;
    freeaddrinfo(found);
    settings.origin_host = host;
    const bool ipv6 = settings.origin.ss_family == AF_INET6 && std::strchr(host, ':') != nullptr;
    settings.origin_name = (ipv6 ? "[" + std::string(host) + "]" : std::string(host)) + ":" + port;

    const char* limit_key_name = nullptr;
    const char* limit_problem = nullptr;
    if (!settings.read(values[kUniqueIp], values[kMaxConnectionsPerIp], values[kLimitRate], values[kLimitRateAfter],
                       limit_key_name, limit_problem))
        return fail(limit_key_name, limit_problem);
    if (settings.unique_ip && settings.mode == Mode::tcp) return fail("unique_ip", "needs mode: http");
    if (settings.limit_rate > 0 && settings.mode == Mode::tcp) return fail("limit_rate", "needs mode: http");
    // In the master, before fork: every worker maps the same table, and the
    // workers of a reloaded configuration those of the workers they replace.
    // One table per origin, as http_download has one per root.
    if (settings.counts_connections_or_downloads())
        settings.counters = smp::http::shared_table<smp::http::SharedCounters>("forward:" + settings.origin_name);

    // TLS both ways: every file read and checked here, in the master, and
    // the workers inherit the contexts by fork.
    const std::string ca = values[kForwardCa].string != nullptr ? values[kForwardCa].string : "";
    const bool origin_tls = values[kForwardTls].number != 0;
    if (!ca.empty() && !origin_tls) return fail("forward_ca", "needs forward_tls: true");
    if (values[kForwardTlsName].string != nullptr && values[kForwardTlsName].string[0] != '\0') {
        if (!origin_tls) return fail("forward_tls_name", "needs forward_tls: true");
        settings.origin_host = values[kForwardTlsName].string;
    }
    std::string problem;
    if (origin_tls) {
        smp::tls::ContextPtr context = smp::tls::make_client_context(ca, problem);
        if (!context) return fail("forward_ca", problem.c_str());
        settings.origin_tls = std::move(context);
    }
    if (!smp::tls::make_listener_context(settings.core, values, kTls, "forward", settings.tls, problem))
        return std::snprintf(error, error_size, "%s", problem.c_str()), false;
    return true;
}

// ---- master hooks -------------------------------------------------------------

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    try {
        auto settings = std::make_unique<Settings>();
        settings->core = core;
        if (!read_settings(values, *settings, error, error_size)) return SMP_ERROR;
        *instance = settings.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void exit_master(void* instance) { delete static_cast<Settings*>(instance); }

// The holdings of a reaped worker no longer count (protocols/common/limits.hpp).
void worker_gone_master(void* instance, int pid) {
    if (auto& counters = static_cast<Settings*>(instance)->counters) counters->forget_process(pid);
}

using Hooks = smp::protocol::WorkerHooks<WorkerState, Settings>;

}  // namespace

// ---- the worker's state ---------------------------------------------------------

WorkerState::WorkerState(const Settings& settings, const smp_worker_context& context)
    : WorkerBase(settings.core, context, settings.counters.get(), settings.buffer_size, on_sweep, kSweepIntervalMs),
      settings_(settings) {}

void WorkerState::accept(int fd, const smp_connection_info& info) {
    Connection* c = adopt(fd, info, {"forward", settings_.max_connections_per_ip, 0});
    if (c == nullptr) return;
    c->worker = this;
    const uint64_t now = uv_now(loop_);
    c->phase_started_ms = now;
    c->client_progress_ms = now;
    c->origin_progress_ms = now;
    if (settings_.tls) {
        // The handshake first, within its own timeout (check_deadlines).
        c->tls = std::make_unique<smp::tls::Stream>();
        if (!c->tls->start(settings_.tls->default_context(), fd)) return close_connection(*c, SMP_END_INTERNAL_ERROR);
        c->phase = Phase::handshaking;
    }
    if (!c->ip_slot.waiting()) start_connection(*c);
}

void WorkerState::start_connection(Connection& c) {
    if (c.phase != Phase::handshaking && !begin_relay(c)) return;
    pump(c);
}

bool WorkerState::begin_relay(Connection& c) {
    if (settings_.mode == Mode::tcp) {
        c.phase = Phase::stream;
        set_phase(c, SMP_PHASE_WRITING);
        c.requests = 1;  // the connection is its one record
        c.exchange.last_progress_report_ms = uv_now(loop_);
        // A byte stream has no way to say "later": it is closed before the
        // origin hears of it, and recorded.
        if (c.over_limit) return close_connection(c, SMP_END_REJECTED_LIMIT), false;
        take_buffer(c.in);
        take_buffer(c.out);
        if (!connect_origin(c)) return false;  // closed, and recorded as upstream_error
    }
    return true;
}

void WorkerState::shutdown() {
    stopping_ = true;
    // Idle connections close now; a request being read or answered finishes,
    // then its connection closes. A tcp relay runs until one side ends it (or
    // the core's shutdown_timeout).
    for (Connection* c = connections_; c != nullptr;) {
        Connection* next = c->next;
        if (c->phase == Phase::request_head && (c->in.data == nullptr || c->in.empty()))
            close_connection(*c, SMP_END_SERVER_SHUTDOWN);
        c = next;
    }
}

void WorkerState::on_sweep(uv_timer_t* timer) {
    auto& self = of<WorkerState>(timer);
    self.give_back_dead_holders_once();
    const uint64_t now = uv_now(self.loop_);
    self.handshake_failures_.tick(self.core_, "forward", now);
    for (Connection* c = self.connections_; c != nullptr;) {
        Connection* next = c->next;  // check_deadlines may close c
        if (!c->closing) self.check_deadlines(*c, now);
        c = next;
    }
}

void WorkerState::take_buffer(RelayBuffer& buffer) {
    if (buffer.data != nullptr) return;
    buffer.data = WorkerBase::take_buffer();
    buffer.capacity = buffer_size();
    buffer.begin = buffer.end = 0;
}

void WorkerState::give_buffer(RelayBuffer& buffer) {
    WorkerBase::give_buffer(buffer.data);
    buffer = RelayBuffer{};
}

}  // namespace smp::forward

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PROTOCOL;
        m.name = "forward";
        m.description = "relays connections to another server (http or tcp) and records what it serves";
        m.config_keys = smp::forward::kKeys.data();
        m.config_key_count = smp::forward::kKeys.size();
        m.init_master = smp::forward::init_master;
        m.exit_master = smp::forward::exit_master;
        m.worker_gone_master = smp::forward::worker_gone_master;
        m.init_worker = smp::forward::Hooks::init;
        m.exit_worker = smp::forward::Hooks::exit;
        m.accept = smp::forward::Hooks::accept;
        m.shutdown = smp::forward::Hooks::shutdown;
        return m;
    }();
    return &module;
}
