#include "connection_internal.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "http_status.hpp"
#include "path.hpp"

namespace smp::forward {

using namespace detail;

// ---- the origin ---------------------------------------------------------------

bool WorkerState::connect_origin(Connection& c) {
    const int fd = socket(settings_.origin.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        origin_failed(c, 502, std::strerror(errno));
        return false;
    }
    const int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    const int connected = connect(fd, reinterpret_cast<const sockaddr*>(&settings_.origin), settings_.origin_length);
    if (connected != 0 && errno != EINPROGRESS) {
        const int error = errno;
        ::close(fd);
        origin_failed(c, 502, std::strerror(error));
        return false;
    }
    auto* u = new Upstream;
    u->fd = fd;
    u->owner = &c;
    u->tcp_connected = connected == 0;
    u->connected = u->tcp_connected && !settings_.origin_tls;
    u->started_ms = uv_now(loop_);
    if (settings_.origin_tls) {
        // The handshake is driven by the origin's poll once the TCP connect
        // is done, and connect_timeout counts both.
        u->tls = std::make_unique<smp::tls::Stream>();
        if (!u->tls->start_client(settings_.origin_tls.get(), fd, settings_.origin_host)) {
            delete u;
            ::close(fd);
            origin_failed(c, 502, "cannot start TLS");
            return false;
        }
    }
    uv_poll_init_socket(loop_, &u->poll, fd);
    u->poll.data = u;
    c.upstream = u;
    c.origin_progress_ms = u->started_ms;
    return true;
}

void WorkerState::close_upstream(Connection& c) {
    Upstream* u = c.upstream;
    if (u == nullptr) return;
    c.upstream = nullptr;
    u->owner = nullptr;
    if (u->tls) u->tls->close_notify();
    uv_close(reinterpret_cast<uv_handle_t*>(&u->poll), on_upstream_closed);
}

bool WorkerState::origin_handshake(Connection& c) {
    Upstream& u = *c.upstream;
    switch (u.tls->handshake()) {
        case smp::tls::Stream::Step::again: return false;  // update_polls asks for what it wants
        case smp::tls::Stream::Step::failed: {
            // A certificate that does not verify says why, once in the log
            // (upstream_failure), and the client gets a 502.
            const std::string what = "TLS handshake failed: " + u.tls->failure_detail();
            origin_failed(c, 502, what.c_str());
            return false;
        }
        case smp::tls::Stream::Step::done: return true;
    }
    return false;
}

void WorkerState::upstream_failure(const char* what) {
    const uint64_t now = uv_now(loop_);
    ++failures_in_burst_;
    char message[300];
    if (!origin_failing_) {
        origin_failing_ = true;
        failures_in_burst_ = 1;
        burst_started_ms_ = now;
        burst_logged_ms_ = now;
        std::snprintf(message, sizeof message, "origin %s: %s; failures are counted, not logged, until it answers",
                      settings_.origin_name.c_str(), what);
        core_->log(SMP_LOG_WARN, kModule, message);
    } else if (now - burst_logged_ms_ >= kFailureLogIntervalMs) {
        burst_logged_ms_ = now;
        std::snprintf(message, sizeof message, "origin %s: still failing, %llu failures in %llu s (last: %s)",
                      settings_.origin_name.c_str(), static_cast<unsigned long long>(failures_in_burst_),
                      static_cast<unsigned long long>((now - burst_started_ms_) / 1000), what);
        core_->log(SMP_LOG_WARN, kModule, message);
    }
}

void WorkerState::upstream_success() {
    if (!origin_failing_) return;
    origin_failing_ = false;
    char message[200];
    std::snprintf(message, sizeof message, "origin %s answers again, after %llu failure(s) in %.1f s",
                  settings_.origin_name.c_str(), static_cast<unsigned long long>(failures_in_burst_),
                  static_cast<double>(uv_now(loop_) - burst_started_ms_) / 1000.0);
    core_->log(SMP_LOG_INFO, kModule, message);
    failures_in_burst_ = 0;
}

}  // namespace smp::forward
