// tcp mode: the bytes of a connection relayed both ways, unchanged. Each
// direction has one buffer; a side is read only while the buffer toward the
// other side has room, and an end of stream is passed on as a half-close
// once everything before it has been delivered.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "connection.hpp"

namespace smp::forward {
namespace {

enum class Moved { nothing, some, failed };

// One direction: reads what `from` has into `buffer` while it has room,
// writes what the buffer holds to `to`, and passes an end of stream on as a
// half-close once everything before it went out. Either side may speak
// TLS (a `tls:` listener, forward_tls): its bytes go through its stream.
struct Direction {
    int from;
    smp::tls::Stream* from_tls;
    int to;
    smp::tls::Stream* to_tls;
    RelayBuffer& buffer;
    bool& readable;
    bool& eof;
    bool& writable;
    bool& shut_write;
    uint64_t& count;
};

Moved fill(Direction d) {
    if (d.eof || !d.readable) return Moved::nothing;
    const size_t room = d.buffer.make_room();
    if (room == 0) return Moved::nothing;
    const ssize_t n = smp::tls::receive(d.from_tls, d.from, d.buffer.data + d.buffer.end, room);
    if (n > 0) {
        d.buffer.end += static_cast<size_t>(n);
        d.count += static_cast<uint64_t>(n);
    }
    if (n >= 0) {
        d.eof = n == 0;
        return Moved::some;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return Moved::failed;
    d.readable = false;
    return Moved::nothing;
}

Moved drain(Direction d) {
    const bool tls_pending = d.to_tls != nullptr && d.to_tls->pending();
    if ((!d.buffer.empty() || tls_pending) && d.writable) {
        const iovec bytes{d.buffer.data + d.buffer.begin, d.buffer.size()};
        // Nothing new: what TLS holds in its record buffer goes.
        const ssize_t n = d.buffer.empty() ? (d.to_tls->flush() ? 1 : -1) : smp::tls::send(d.to_tls, d.to, &bytes, 1);
        if (n > 0) {
            d.buffer.consume(std::min(static_cast<size_t>(n), d.buffer.size()));
            return Moved::some;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return Moved::failed;
        d.writable = false;
    }
    if (d.eof && d.buffer.empty() && !tls_pending && !d.shut_write) {
        if (d.to_tls != nullptr) d.to_tls->close_notify();
        ::shutdown(d.to, SHUT_WR);
        d.shut_write = true;
        return Moved::some;
    }
    return Moved::nothing;
}

}  // namespace

bool WorkerState::step_stream(Connection& c) {
    Upstream* u = c.upstream;
    if (u == nullptr) return false;
    const uint64_t now = uv_now(loop_);
    const Direction up{c.fd,       c.tls.get(), u->fd,       u->tls.get(),  c.in,
                       c.readable, c.eof,       u->writable, u->shut_write, c.bytes_from_client};
    const Direction down{u->fd,       u->tls.get(), c.fd,       c.tls.get(),  c.out,
                         u->readable, u->eof,       c.writable, c.shut_write, c.bytes_to_client};
    // The client's bytes are read even before the origin answered the
    // connect: they wait in the buffer, which bounds them.
    const Moved from_client = fill(up);
    if (from_client == Moved::failed) {
        close_connection(c, SMP_END_CLIENT_CLOSED);
        return false;
    }
    if (!u->connected) return from_client == Moved::some;
    const Moved to_origin = drain(up);
    const Moved from_origin = to_origin == Moved::failed ? Moved::failed : fill(down);
    if (from_origin == Moved::failed) {
        origin_failed(c, 0, std::strerror(errno));
        return false;
    }
    const Moved to_client = drain(down);
    if (to_client == Moved::failed) {
        close_connection(c, SMP_END_CLIENT_CLOSED);
        return false;
    }
    if (from_client == Moved::some || to_client == Moved::some) c.client_progress_ms = now;
    if (to_origin == Moved::some || from_origin == Moved::some) c.origin_progress_ms = now;
    // Both ends of stream passed on, nothing left in between: done.
    if (c.shut_write && u->shut_write) {
        close_connection(c, SMP_END_COMPLETED);
        return false;
    }
    const bool moved = from_client == Moved::some || to_origin == Moved::some || from_origin == Moved::some ||
                       to_client == Moved::some;
    if (moved && now - c.exchange.last_progress_report_ms >= 1000) {
        c.exchange.last_progress_report_ms = now;
        report(c, SMP_END_COMPLETED, false);
    }
    return moved;
}

}  // namespace smp::forward
