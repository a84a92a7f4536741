// http_download: the file server. Serves the files under `root` over
// HTTP/1.1 with Range, conditional requests and keep-alive; bodies go out
// with sendfile(2).
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then worker), and the registration struct last.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <new>
#include <string_view>

#include "connection.hpp"

namespace smp::http {
namespace {

// ---- config -----------------------------------------------------------------

enum Key : size_t {
    kRoot,
    kBlockSize,
    kMaxRanges,
    kMaxHeaderSize,
    kHeaderTimeout,
    kKeepaliveTimeout,
    kSendTimeout,
    kNotsentLowat,
    kSendMinRate,
    kOpenFileCache,
    kOpenFileCacheValid,
    kMimeTypes,
    kUniqueIp,
    kMaxConnectionsPerIp,
    kLimitRate,
    kLimitRateAfter,
    kLimitRatePerDownload,
    kRedirectHttps,
    kHttpsPort,
    kHsts,
    kSecureLinkSecrets,
    kSecureLinkBindIp,
    kAutoindex,
    kAutoindexMaxEntries,
    kTls,  // the tls.* keys of every protocol module (tls.hpp) follow
};

constexpr std::array<smp_config_key, kTls> kOwnKeys = {{
    {"root", SMP_CONFIG_STRING, nullptr, 1, "folder whose files are served"},
    {"block_size", SMP_CONFIG_SIZE, "2MiB", 0, "file bytes handed to the kernel per send turn"},
    {"max_ranges", SMP_CONFIG_INT, "16", 0, "most ranges in one request; more are answered with the whole file"},
    {"max_header_size", SMP_CONFIG_SIZE, "8KiB", 0, "request line and header fields; longer gets 414 or 431"},
    {"header_timeout", SMP_CONFIG_DURATION, "10s", 0, "time to receive a request's header block"},
    {"keepalive_timeout", SMP_CONFIG_DURATION, "75s", 0, "idle time allowed between requests"},
    {"send_timeout", SMP_CONFIG_DURATION, "60s", 0, "time a response may stall with no byte taken by the client"},
    {"notsent_lowat", SMP_CONFIG_SIZE, "64KiB", 0,
     "unsent response bytes queued in a connection's socket (TCP_NOTSENT_LOWAT); 0: no limit"},
    {"send_min_rate", SMP_CONFIG_SIZE, "240", 0,
     "bytes per second a client must take, over 10 s, while a response is sent; slower is closed (0: any)"},
    {"open_file_cache", SMP_CONFIG_INT, "16384", 0,
     "open files kept per worker (at most half of the descriptors a process may open)"},
    {"open_file_cache_valid", SMP_CONFIG_DURATION, "1s", 0, "time before a cached file is checked again"},
    {"mime_types", SMP_CONFIG_STRING, "/etc/mime.types", 0, "extension to Content-Type map"},
    {"unique_ip", SMP_CONFIG_BOOL, "false", 0,
     "refuse (429) a second concurrent download of the same file by the same client IP"},
    {"max_connections_per_ip", SMP_CONFIG_INT, "0", 0,
     "open connections one client IP may hold; past it requests get 429 (0: no limit)"},
    {"limit_rate", SMP_CONFIG_SIZE, "0", 0, "bytes per second of one response, after limit_rate_after (0: none)"},
    {"limit_rate_after", SMP_CONFIG_SIZE, "0", 0, "bytes of a response sent at full speed before limit_rate"},
    {"limit_rate_per_download", SMP_CONFIG_SIZE, "0", 0,
     "bytes per second shared by all the requests of one download, segments included (0: none)"},
    {"redirect_https", SMP_CONFIG_BOOL, "false", 0,
     "answer every request with 308 to the same URL over HTTPS (a plain listener only)"},
    {"https_port", SMP_CONFIG_INT, "443", 0, "the port of HTTPS put in redirect_https's Location; 443 is left out"},
    {"hsts", SMP_CONFIG_STRING, nullptr, 0,
     "Strict-Transport-Security value sent on every response over TLS, e.g. max-age=31536000 (none by default)"},
    {"secure_link.secrets", SMP_CONFIG_STRING_LIST, nullptr, 1,
     "signed links only (docs/http.md): the first secret signs, every one verifies"},
    {"secure_link.bind_ip", SMP_CONFIG_BOOL, "false", 0, "a link also names the client's address"},
    {"autoindex", SMP_CONFIG_STRING, "off", 0,
     "directory listings: off (403), html or json; a directory's index.html is served either way"},
    {"autoindex_max_entries", SMP_CONFIG_INT, "10000", 0, "most entries in one listing; more are cut, and it says so"},
}};
constexpr auto kKeys = smp::tls::with_tls_keys(kOwnKeys);

constexpr uint64_t kSweepIntervalMs = 500;
constexpr uint64_t kShutdownGraceMs = 1000;  // for idle connections at a graceful stop
// At max_connections, a connection that has waited this long for a request
// (or for the rest of its head) may be closed to admit a new one; a younger
// one may be a client whose request is on its way.
constexpr uint64_t kReclaimMinWaitMs = 1000;
// send_min_rate is measured over windows this long: longer than a few lost
// packets' retransmissions, short enough that slow readers do not pile up.
constexpr uint64_t kMinRateWindowMs = 10'000;
// At max_connections, a response whose client has taken less than
// send_min_rate for this long in its current window may be closed too.
constexpr uint64_t kReclaimMinSlowMs = 2000;

// A Strict-Transport-Security value goes into every head over TLS as
// given: visible ASCII and spaces only, so that it cannot end the field or
// the head. Empty: no field.
bool valid_hsts(std::string_view value) {
    return std::all_of(value.begin(), value.end(), [](char c) { return c >= ' ' && c <= '~'; });
}

// Cached files and connections share a worker's descriptors: the cache
// takes at most half of what a process may open (RLIMIT_NOFILE, raised to
// its hard limit at start), so that a full cache never makes an accept or a
// download's open fail with EMFILE. Said when it lowers the value: as a
// warning when another value than the default was asked for, else as a note.
void limit_open_file_cache(bool asked, Settings& settings) {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
    const size_t half = std::max<size_t>(1, static_cast<size_t>(limit.rlim_cur / 2));
    if (settings.open_file_cache <= half) return;
    if (settings.core != nullptr) {
        char message[300];
        std::snprintf(message, sizeof message,
                      "open_file_cache: %zu files would be more than half of the %llu descriptors a process may "
                      "open (RLIMIT_NOFILE); %zu kept",
                      settings.open_file_cache, static_cast<unsigned long long>(limit.rlim_cur), half);
        settings.core->log(asked ? SMP_LOG_WARN : SMP_LOG_INFO, "http_download", message);
    }
    settings.open_file_cache = half;
}

// Reads the table's values into `settings`; false with a message when one
// is out of range or the root cannot be opened.
bool read_settings(const smp_config_value* values, Settings& settings, char* error, size_t error_size) {
    // "key: problem": the core reports it at the key's line.
    auto fail = [&](const char* key, const char* problem) {
        std::snprintf(error, error_size, "%s: %s", key, problem);
        return false;
    };
    settings.root = values[kRoot].string;
    settings.block_size = static_cast<uint64_t>(values[kBlockSize].number);
    settings.max_header_size = static_cast<size_t>(values[kMaxHeaderSize].number);
    settings.header_timeout_ms = static_cast<uint64_t>(values[kHeaderTimeout].number);
    settings.keepalive_timeout_ms = static_cast<uint64_t>(values[kKeepaliveTimeout].number);
    settings.send_timeout_ms = static_cast<uint64_t>(values[kSendTimeout].number);
    settings.notsent_lowat = static_cast<uint64_t>(values[kNotsentLowat].number);
    settings.send_min_rate = static_cast<uint64_t>(values[kSendMinRate].number);
    settings.open_file_cache_valid_ms = static_cast<uint64_t>(values[kOpenFileCacheValid].number);
    if (settings.block_size < 1024) return fail("block_size", "must be at least 1KiB");
    if (settings.notsent_lowat > 1024 * 1024 * 1024) return fail("notsent_lowat", "must be at most 1GiB");
    if (settings.send_min_rate > 1024 * 1024 * 1024) return fail("send_min_rate", "must be at most 1GiB");
    if (values[kMaxRanges].number < 1 || values[kMaxRanges].number > 64)
        return fail("max_ranges", "must be between 1 and 64");
    settings.max_ranges = static_cast<size_t>(values[kMaxRanges].number);
    if (settings.max_header_size < 1024 || settings.max_header_size > 1024 * 1024)
        return fail("max_header_size", "must be between 1KiB and 1MiB");
    if (values[kOpenFileCache].number < 1 || values[kOpenFileCache].number > 1'000'000)
        return fail("open_file_cache", "must be between 1 and 1000000");
    settings.open_file_cache = static_cast<size_t>(values[kOpenFileCache].number);
    limit_open_file_cache(settings.open_file_cache != kDefaultOpenFileCache, settings);
    for (Key key : {kHeaderTimeout, kKeepaliveTimeout, kSendTimeout})
        if (values[key].number < 1) return fail(kKeys[key].name, "must be more than 0");
    const char* limit_key_name = nullptr;
    const char* limit_problem = nullptr;
    if (!settings.read(values[kUniqueIp], values[kMaxConnectionsPerIp], values[kLimitRate], values[kLimitRateAfter],
                       limit_key_name, limit_problem))
        return fail(limit_key_name, limit_problem);
    settings.limit_rate_per_download = static_cast<uint64_t>(values[kLimitRatePerDownload].number);
    settings.redirect_https = values[kRedirectHttps].number != 0;
    if (values[kHttpsPort].number < 1 || values[kHttpsPort].number > 65535)
        return fail("https_port", "must be between 1 and 65535");
    settings.https_port = static_cast<uint16_t>(values[kHttpsPort].number);
    settings.hsts = values[kHsts].string != nullptr ? values[kHsts].string : "";
    if (values[kSecureLinkSecrets].present) {
        const smp_config_value& secrets = values[kSecureLinkSecrets];
        for (size_t i = 0; i < secrets.list_length; ++i) settings.link_secrets.emplace_back(secrets.list[i]);
        if (settings.link_secrets.empty()) return fail("secure_link.secrets", "needs at least one secret");
        for (const std::string& secret : settings.link_secrets)
            if (secret.size() < 16) return fail("secure_link.secrets", "each secret must be at least 16 characters");
        settings.link_bind_ip = values[kSecureLinkBindIp].number != 0;
    }
    const std::string_view autoindex = values[kAutoindex].string;
    if (autoindex == "off")
        settings.autoindex = Autoindex::off;
    else if (autoindex == "html")
        settings.autoindex = Autoindex::html;
    else if (autoindex == "json")
        settings.autoindex = Autoindex::json;
    else
        return fail("autoindex", "must be off, html or json");
    if (values[kAutoindexMaxEntries].number < 1 || values[kAutoindexMaxEntries].number > 1'000'000)
        return fail("autoindex_max_entries", "must be between 1 and 1000000");
    settings.autoindex_max_entries = static_cast<size_t>(values[kAutoindexMaxEntries].number);
    if (!valid_hsts(settings.hsts))
        return fail("hsts", "must be printable characters on one line, e.g. max-age=31536000");
    // In the master, before fork: every worker maps the same tables, and the
    // workers of a reloaded configuration those of the workers they replace.
    if (settings.limit_rate_per_download > 0) settings.buckets = shared_table<SharedBuckets>(settings.root);
    if (settings.counts_connections_or_downloads()) settings.counters = shared_table<SharedCounters>(settings.root);

    settings.root_fd = open(settings.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (settings.root_fd < 0) {
        char problem[300];
        std::snprintf(problem, sizeof problem, "cannot open folder '%s': %s", settings.root.c_str(),
                      std::strerror(errno));
        return fail("root", problem);
    }
    // HTTPS: every certificate and key read and checked here, in the master.
    std::string tls_problem;
    if (!smp::tls::make_listener_context(settings.core, values, kTls, "http_download", settings.tls, tls_problem))
        return std::snprintf(error, error_size, "%s", tls_problem.c_str()), false;
    if (settings.tls && settings.redirect_https) return fail("redirect_https", "the listener already speaks TLS");
    // File bodies are where kernel TLS pays: said once per listener.
    if (settings.tls && settings.core != nullptr)
        if (const std::string note = smp::tls::kernel_tls_note(settings.tls->settings()); !note.empty())
            settings.core->log(SMP_LOG_INFO, "http_download", note.c_str());
    if (!settings.mime.load(values[kMimeTypes].string) && settings.core != nullptr) {
        char message[300];
        std::snprintf(message, sizeof message, "cannot read %s: every file is served as application/octet-stream",
                      values[kMimeTypes].string);
        settings.core->log(SMP_LOG_WARN, "http_download", message);
    }
    return true;
}

// ---- master hooks -------------------------------------------------------------

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    try {
        auto settings = std::make_unique<Settings>();
        settings->core = core;
        if (!read_settings(values, *settings, error, error_size)) {
            if (settings->root_fd >= 0) close(settings->root_fd);
            return SMP_ERROR;
        }
        *instance = settings.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

// The holdings of a reaped worker no longer count (limits.hpp).
void worker_gone_master(void* instance, int pid) {
    if (auto& counters = static_cast<Settings*>(instance)->counters) counters->forget_process(pid);
}

void exit_master(void* instance) {
    auto* settings = static_cast<Settings*>(instance);
    if (settings->root_fd >= 0) close(settings->root_fd);
    delete settings;
}

// ---- worker hooks -------------------------------------------------------------

int reclaim_connections(void* worker_state, int count) {
    try {
        return static_cast<WorkerState*>(worker_state)->reclaim(count);
    } catch (...) {
        return 0;  // out of memory for the candidates: nothing closed
    }
}

using Hooks = smp::protocol::WorkerHooks<WorkerState, Settings>;

}  // namespace

// ---- the worker's state ---------------------------------------------------------

WorkerState::WorkerState(const Settings& settings, const smp_worker_context& context)
    : WorkerBase(settings.core, context, settings.counters.get(), settings.max_header_size, on_sweep, kSweepIntervalMs),
      settings_(settings),
      files_(settings.root_fd, settings.mime, settings.open_file_cache, settings.open_file_cache_valid_ms) {}

WorkerState::~WorkerState() {
    for (Connection* c = connections_; c != nullptr; c = c->next)
        if (c->exchange != nullptr) c->exchange->detach_listing();
}

void WorkerState::accept(int fd, const smp_connection_info& info) {
    Connection* c = adopt(fd, info, {"http_download", settings_.max_connections_per_ip, settings_.notsent_lowat});
    if (c == nullptr) return;
    c->worker = this;
    c->deadline_ms = uv_now(loop_) + settings_.header_timeout_ms;
    if (settings_.tls) {
        // The handshake first, within its own timeout.
        c->tls = std::make_unique<smp::tls::Stream>();
        if (!c->tls->start(settings_.tls->default_context(), fd)) return close_connection(*c, SMP_END_INTERNAL_ERROR);
        c->state = ConnectionState::handshaking;
        c->deadline_ms = uv_now(loop_) + settings_.tls->settings().handshake_timeout_ms;
    }
    if (!c->ip_slot.waiting()) start_connection(*c);
}

// The limit per client has answered (over_limit): the request is read, and
// refused when over. Over TLS the handshake starts at once, as forward's
// does: the ClientHello has nearly always come by the time the connection is
// accepted, and the server's flight then leaves without a turn of the loop
// (docs/tls.md, "The handshake starts with the accept").
void WorkerState::start_connection(Connection& c) {
    if (c.state == ConnectionState::handshaking) return on_handshake(c);
    set_poll(c, UV_READABLE);
}

void WorkerState::shutdown() {
    stopping_ = true;
    // A request being read or answered finishes, then its connection closes.
    // A connection with no request yet may have one on its way (a reload
    // under load): closing it now would fail that request. It gets a short
    // grace instead; a request that comes is answered with Connection: close,
    // and the sweep closes those that stay silent.
    const uint64_t grace_end = uv_now(loop_) + kShutdownGraceMs;
    for (Connection* c = connections_; c != nullptr; c = c->next)
        if (c->state == ConnectionState::reading && c->in_length == 0)
            c->deadline_ms = std::min(c->deadline_ms, grace_end);
}

// A response paced by a rate limit goes at our pace, not the client's.
bool WorkerState::min_rate_applies(const Connection& c) const {
    return settings_.send_min_rate > 0 && c.exchange != nullptr && !c.paused && !c.exchange->waiting_for_plugin() &&
           settings_.limit_rate == 0 && c.exchange->rate_key == 0;
}

bool WorkerState::slow_so_far(const Connection& c, uint64_t now) const {
    const uint64_t sent = c.exchange->header_bytes + c.exchange->body_bytes;
    return (sent - c.rate_window_sent) * 1000 < settings_.send_min_rate * (now - c.rate_window_ms);
}

bool WorkerState::below_min_rate(Connection& c, uint64_t now) {
    if (!min_rate_applies(c)) return false;
    const uint64_t sent = c.exchange->header_bytes + c.exchange->body_bytes;
    if (c.rate_window_request != c.requests) {  // a new response: its first window starts
        c.rate_window_request = c.requests;
        c.rate_window_ms = now;
        c.rate_window_sent = sent;
        return false;
    }
    if (now - c.rate_window_ms < kMinRateWindowMs) return false;
    const bool slow = slow_so_far(c, now);
    c.rate_window_ms = now;
    c.rate_window_sent = sent;
    return slow;
}

int WorkerState::reclaim(int count) {
    if (count <= 0 || stopping_) return 0;
    const uint64_t now = uv_now(loop_);
    // Each candidate with the time its wait (or its slowness) began. A
    // connection waiting for a request or the rest of its head was given a
    // deadline when that wait began: the wait's timeout after its start.
    reclaimable_.clear();
    for (Connection* c = connections_; c != nullptr; c = c->next) {
        if (c->closing) continue;
        if (c->state == ConnectionState::writing) {
            if (min_rate_applies(*c) && c->rate_window_request == c->requests &&
                now >= c->rate_window_ms + kReclaimMinSlowMs && slow_so_far(*c, now))
                reclaimable_.emplace_back(c->rate_window_ms, c);
            continue;
        }
        const uint64_t timeout = c->state == ConnectionState::lingering ? settings_.lingering_timeout_ms
                                 : c->in_length == 0 && c->requests > 0 ? settings_.keepalive_timeout_ms
                                                                        : settings_.header_timeout_ms;
        const uint64_t since = c->deadline_ms > timeout ? c->deadline_ms - timeout : 0;
        if (now >= since + kReclaimMinWaitMs) reclaimable_.emplace_back(since, c);
    }
    const size_t closing = std::min(reclaimable_.size(), static_cast<size_t>(count));
    std::partial_sort(reclaimable_.begin(), reclaimable_.begin() + static_cast<std::ptrdiff_t>(closing),
                      reclaimable_.end());
    for (size_t i = 0; i < closing; ++i) {
        Connection& c = *reclaimable_[i].second;
        if (c.state == ConnectionState::writing) {
            close_connection(c, SMP_END_TIMEOUT);  // too slow, as at the end of its window
            continue;
        }
        // A head cut short is recorded, as at its timeout.
        if (c.state == ConnectionState::reading && c.in_length > 0) report(c, nullptr, SMP_END_REJECTED_LIMIT, true);
        close_connection(c, SMP_END_REJECTED_LIMIT);
    }
    reclaimed_since_log_ += closing;
    if (reclaimed_since_log_ > 0 && now - reclaim_logged_ms_ >= 1000) {
        char message[200];
        std::snprintf(message, sizeof message,
                      "max_connections reached: %llu idle, head-trickling or slow-reading connection(s) closed to "
                      "admit new ones",
                      static_cast<unsigned long long>(reclaimed_since_log_));
        core_->log(SMP_LOG_WARN, "http_download", message);
        reclaim_logged_ms_ = now;
        reclaimed_since_log_ = 0;
    }
    return static_cast<int>(closing);
}

void WorkerState::on_sweep(uv_timer_t* timer) {
    auto& self = of<WorkerState>(timer);
    self.give_back_dead_holders_once();
    const uint64_t now = uv_now(self.loop_);
    self.handshake_failures_.tick(self.core_, "http_download", now);
    for (Connection* c = self.connections_; c != nullptr;) {
        Connection* next = c->next;
        if (c->state == ConnectionState::writing && !c->closing && self.below_min_rate(*c, now)) {
            // Slow read: a client that takes a few bytes now and then keeps
            // send_timeout from ever expiring, and holds its connection.
            self.close_connection(*c, SMP_END_TIMEOUT);
            c = next;
            continue;
        }
        if (now >= c->deadline_ms && !c->closing && c->state == ConnectionState::handshaking) {
            self.handshake_failures_.note(smp::tls::HandshakeFailure::timeout, c->logged_ip, {}, self.core_,
                                          "http_download", now);
            self.close_connection(*c, SMP_END_TIMEOUT);
        } else if (now >= c->deadline_ms && !c->closing) {
            // A partly received request is recorded; an idle keep-alive
            // connection or a lingering close just ends.
            if (c->state == ConnectionState::reading && c->in_length > 0)
                self.report(*c, nullptr, SMP_END_TIMEOUT, true);
            const bool idle = c->state == ConnectionState::reading && c->in_length == 0;
            self.close_connection(*c, self.stopping_ && idle ? SMP_END_SERVER_SHUTDOWN : SMP_END_TIMEOUT);
        }
        c = next;
    }
}

void WorkerState::on_poll(uv_poll_t* handle, int status, int events) {
    auto& c = *static_cast<Connection*>(handle->data);
    WorkerState& self = *c.worker;
    if (status < 0) {
        // libuv reports EPOLLERR as UV_EBADF; the socket knows what happened.
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &length);
        const bool client_gone = error == ECONNRESET || error == EPIPE;
        return self.close_connection(c, client_gone ? SMP_END_CLIENT_CLOSED : SMP_END_WRITE_ERROR);
    }
    if (c.state == ConnectionState::handshaking) return self.on_handshake(c);
    // TLS that needs to read before it can write (a key update) waits for
    // the socket to be readable while a response is sent.
    if (c.state == ConnectionState::writing && c.tls && c.tls->wants_read() && (events & UV_READABLE))
        return self.on_writable(c);
    if (c.state == ConnectionState::writing) {
        // A response being made reads nothing: the next request (or the
        // client's FIN) is read after it. The interest in reading is dropped
        // only when it fires, so that a response that waits for a plugin
        // costs no epoll_ctl when the client sends nothing meanwhile.
        if (events & UV_WRITABLE)
            self.on_writable(c);
        else
            self.set_poll(c, c.poll_events & ~UV_READABLE);
    } else if (events & (UV_READABLE | UV_DISCONNECT)) {
        self.on_readable(c);
    }
}

Exchange* WorkerState::take_exchange() {
    if (free_exchanges_.empty()) {
        exchanges_.push_back(std::make_unique<Exchange>());
        exchanges_.back()->out.reserve(1024);
        return exchanges_.back().get();
    }
    Exchange* exchange = free_exchanges_.back();
    free_exchanges_.pop_back();
    return exchange;
}

void WorkerState::give_exchange(Exchange*& exchange) {
    exchange->reset();
    free_exchanges_.push_back(exchange);
    exchange = nullptr;
}

}  // namespace smp::http

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PROTOCOL;
        m.name = "http_download";
        m.description = "HTTP/1.1 file server with Range, conditional requests and sendfile";
        m.config_keys = smp::http::kKeys.data();
        m.config_key_count = smp::http::kKeys.size();
        m.init_master = smp::http::init_master;
        m.exit_master = smp::http::exit_master;
        m.worker_gone_master = smp::http::worker_gone_master;
        m.init_worker = smp::http::Hooks::init;
        m.exit_worker = smp::http::Hooks::exit;
        m.accept = smp::http::Hooks::accept;
        m.shutdown = smp::http::Hooks::shutdown;
        m.reclaim = smp::http::reclaim_connections;
        return m;
    }();
    return &module;
}
