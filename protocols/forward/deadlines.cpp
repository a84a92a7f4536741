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

// ---- deadlines and events -----------------------------------------------------

void WorkerState::check_deadlines(Connection& c, uint64_t now) {
    const Settings& s = settings_;
    Upstream* u = c.upstream;
    if (u != nullptr && !u->connected && now - u->started_ms >= s.connect_timeout_ms) {
        origin_failed(
            c, 504,
            u->tcp_connected ? "no TLS handshake within connect_timeout" : "no connection within connect_timeout");
        return pump(c);
    }
    switch (c.phase) {
        case Phase::handshaking:
            // Nothing was asked: no record; the log tells.
            if (now - c.phase_started_ms >= s.tls->settings().handshake_timeout_ms) {
                handshake_failures_.note(smp::tls::HandshakeFailure::timeout, c.logged_ip, {}, core_, "forward", now);
                close_connection(c, SMP_END_TIMEOUT);
            }
            return;
        case Phase::request_head: {
            const bool partial = c.in.data != nullptr && !c.in.empty();
            if (now - c.phase_started_ms < (partial ? s.header_timeout_ms : s.keepalive_timeout_ms)) return;
            if (partial) report(c, SMP_END_TIMEOUT, true);
            return close_connection(c, SMP_END_TIMEOUT);
        }
        case Phase::lingering:
            if (now - c.phase_started_ms >= kLingerMs) close_connection(c, SMP_END_COMPLETED);
            return;
        case Phase::stream: {
            if (!c.out.empty() && now - c.client_progress_ms >= s.send_timeout_ms)
                return close_connection(c, SMP_END_TIMEOUT);
            if (now - std::max(c.client_progress_ms, c.origin_progress_ms) >= s.read_timeout_ms)
                close_connection(c, SMP_END_TIMEOUT);
            return;
        }
        case Phase::exchange: break;
    }
    const Exchange& e = c.exchange;
    const bool to_client = e.client_head_sent < e.client_head.size() || (e.response_body_ready > 0 && !c.paused);
    if (to_client && now - c.client_progress_ms >= s.send_timeout_ms) return close_connection(c, SMP_END_TIMEOUT);
    // A request body that stopped coming, while there is room for it.
    if (!e.request_complete && !e.local_response && has_room(c.in) && now - c.client_progress_ms >= s.read_timeout_ms)
        return close_connection(c, SMP_END_TIMEOUT);
    if (u == nullptr || !u->connected) return;
    // The origin owes us bytes (its response, while we have room for them),
    // or has not taken the request's.
    const bool request_sent = e.request_complete && e.upstream_head_sent == e.upstream_head.size() &&
                              e.request_body_ready == 0 && !tls_pending(u->tls);
    const bool waiting = request_sent && !e.response_complete && has_room(c.out);
    const bool stalled = !u->writable && !request_sent;
    if ((waiting && now - c.origin_progress_ms >= s.read_timeout_ms) ||
        (stalled && now - c.origin_progress_ms >= s.send_timeout_ms)) {
        origin_failed(c, 504, "no byte within read_timeout");
        pump(c);
    }
}

namespace {

// An origin connection not ready for bytes waits for its TCP connect
// (writable), then for what its TLS handshake wants.
int connecting_events(const Upstream& u) { return u.tls && u.tcp_connected ? u.tls->poll_events() : UV_WRITABLE; }

// Over TLS a write may need the socket readable first (and the poll's
// events make both sides worth a try: on_client_poll). Bytes TLS has
// decrypted and not handed out are not seen by the poll: a writable socket
// wakes it at once, for the read that takes them.
int tls_events(const std::unique_ptr<smp::tls::Stream>& tls, int events) {
    if (!tls) return events;
    if ((events & UV_WRITABLE) && tls->wants_read()) events |= UV_READABLE;
    if ((events & UV_READABLE) && tls->has_buffered_input()) events |= UV_WRITABLE;
    return events;
}

}  // namespace

void WorkerState::update_polls(Connection& c) {
    int client = 0;
    int origin = 0;
    Upstream* u = c.upstream;
    const Exchange& e = c.exchange;
    switch (c.phase) {
        case Phase::handshaking: client = c.tls->poll_events(); break;
        case Phase::request_head:
            if (!c.eof && (c.in.data == nullptr || c.in.size() < settings_.max_header_size)) client |= UV_READABLE;
            if (u != nullptr) origin |= UV_READABLE;  // to notice an idle origin closing
            break;
        case Phase::lingering: client |= UV_READABLE; break;
        case Phase::exchange:
            if (e.download_slot.waiting()) break;  // nothing moves until the slot's answer
            if (!e.request_complete && !e.local_response && !c.eof && has_room(c.in)) client |= UV_READABLE;
            if (e.client_head_sent < e.client_head.size() || (e.response_body_ready > 0 && !c.paused) ||
                tls_pending(c.tls))
                client |= UV_WRITABLE;
            if (u != nullptr && !u->connected) {
                origin |= connecting_events(*u);
            } else if (u != nullptr) {
                if (e.upstream_head_sent < e.upstream_head.size() || e.request_body_ready > 0 || tls_pending(u->tls))
                    origin |= UV_WRITABLE;
                if (!e.response_complete && !u->eof && has_room(c.out)) origin |= UV_READABLE;
            }
            break;
        case Phase::stream:
            if (!c.eof && has_room(c.in)) client |= UV_READABLE;
            if (!c.out.empty() || tls_pending(c.tls)) client |= UV_WRITABLE;
            if (u != nullptr && !u->connected) {
                origin |= connecting_events(*u);
            } else if (u != nullptr) {
                if (!u->eof && has_room(c.out)) origin |= UV_READABLE;
                if (!c.in.empty() || tls_pending(u->tls)) origin |= UV_WRITABLE;
            }
            break;
    }
    if (c.phase != Phase::handshaking) client = tls_events(c.tls, client);
    if (u != nullptr && u->connected) origin = tls_events(u->tls, origin);
    if (client != c.poll_events) {
        c.poll_events = client;
        if (client == 0)
            uv_poll_stop(&c.poll);
        else
            uv_poll_start(&c.poll, client, on_client_poll);
    }
    if (u != nullptr && origin != u->poll_events) {
        u->poll_events = origin;
        if (origin == 0)
            uv_poll_stop(&u->poll);
        else
            uv_poll_start(&u->poll, origin, on_upstream_poll);
    }
}

void WorkerState::on_client_poll(uv_poll_t* handle, int status, int events) {
    auto& c = *static_cast<Connection*>(handle->data);
    // An error (libuv says UV_EBADF for EPOLLERR, and stops the handle) is
    // told by the next read or write; the handle is started again if needed.
    if (status < 0) c.poll_events = 0;
    if (status < 0 || (events & UV_READABLE)) c.readable = true;
    if (status < 0 || (events & UV_WRITABLE)) c.writable = true;
    // Over TLS a read may wait for the socket to be writable, or a write for
    // it to be readable: any event makes both worth a try.
    if (c.tls) c.readable = c.writable = true;
    c.worker->pump(c);
}

void WorkerState::on_upstream_poll(uv_poll_t* handle, int status, int events) {
    auto& u = *static_cast<Upstream*>(handle->data);
    Connection& c = *u.owner;
    WorkerState& self = *c.worker;
    if (!u.connected) {
        if (!u.tcp_connected) {
            int error = 0;
            socklen_t length = sizeof error;
            if (getsockopt(u.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
            if (error != 0) {
                self.origin_failed(c, 502, std::strerror(error));
                return self.pump(c);
            }
            u.tcp_connected = true;
        }
        if (u.tls && !self.origin_handshake(c)) return self.pump(c);
        u.connected = true;
        if (self.settings_.mode == Mode::tcp) self.upstream_success();
    }
    if (status < 0) u.poll_events = 0;  // libuv stopped the handle
    if (status < 0 || (events & UV_READABLE)) u.readable = true;
    if (status < 0 || (events & UV_WRITABLE)) u.writable = true;
    if (u.tls) u.readable = u.writable = true;  // as on_client_poll
    self.pump(c);
}

void WorkerState::on_upstream_closed(uv_handle_t* handle) {
    auto* u = static_cast<Upstream*>(handle->data);
    ::close(u->fd);
    delete u;
}

}  // namespace smp::forward
