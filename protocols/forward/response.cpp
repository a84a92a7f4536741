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
using smp::http::Field;

// ---- responses ----------------------------------------------------------------

bool WorkerState::read_response(Connection& c) {
    Exchange& e = c.exchange;
    Upstream* u = c.upstream;
    if (u == nullptr || !u->connected || !u->readable || e.response_complete || e.local_response) return false;
    if (c.out.data == nullptr) take_buffer(c.out);
    const size_t room = c.out.make_room();
    if (room == 0) return false;  // the client has not taken what we hold
    const ssize_t n = smp::tls::receive(u->tls.get(), u->fd, c.out.data + c.out.end, room);
    if (n > 0) {
        c.out.end += static_cast<size_t>(n);
        c.origin_progress_ms = uv_now(loop_);
        parse_response(c);
        return true;
    }
    if (n < 0 && would_block(errno)) {
        u->readable = false;
        return false;
    }
    const char* what = n == 0 ? "closed the connection" : std::strerror(errno);
    u->eof = true;
    if (!e.response_head_done) {
        origin_failed(c, 502, what);
        return true;
    }
    // The end of stream ends a body that has no length; any other is cut short.
    if (n == 0) http_parser_execute(&e.response, &kResponseSettings, nullptr, 0);
    if (n == 0 && e.response_complete) return true;
    char message[160];
    std::snprintf(message, sizeof message, "%s in the middle of a response", what);
    origin_failed(c, 502, message);
    return true;
}

void WorkerState::parse_response(Connection& c) {
    Exchange& e = c.exchange;
    // Interim (1xx) heads are passed on, and the final head follows them.
    while (!e.response_head_done) {
        const size_t end = head_end({c.out.data + c.out.begin, c.out.size()});
        if (end == 0) {
            if (c.out.full()) origin_failed(c, 502, "sent a response head larger than buffer_size");
            return;
        }
        parse_response_head(c, end);
        if (c.closing || e.local_response) return;
    }
    if (e.response_complete || c.out.size() <= e.response_body_ready) return;
    const char* at = c.out.data + c.out.begin + e.response_body_ready;
    const size_t length = c.out.size() - e.response_body_ready;
    e.parse_base = e.wire_parsed;
    e.parse_at = at;
    const size_t parsed = http_parser_execute(&e.response, &kResponseSettings, at, length);
    if (!parsed_cleanly(e.response)) {
        return origin_failed(c, 502, "sent a body that does not parse");
    }
    e.response_body_ready += parsed;
    e.wire_parsed += parsed;
    if (e.response_complete && parsed < length) {
        // Bytes after the response that nobody asked for: dropped, and the
        // origin connection is not used again.
        c.out.end = c.out.begin + e.response_body_ready;
        c.upstream->eof = true;
    }
}

void WorkerState::parse_response_head(Connection& c, size_t head_length) {
    Exchange& e = c.exchange;
    const std::string_view head{c.out.data + c.out.begin, head_length};
    http_parser_init(&e.response, HTTP_RESPONSE);
    e.response.data = static_cast<smp::http::ParsedHead*>(&e);
    e.fields.clear();
    e.bad_field = false;
    e.last_was_value = false;
    const size_t parsed = http_parser_execute(&e.response, &kResponseSettings, head.data(), head.size());
    const int status = static_cast<int>(e.response.status_code);
    if (has_bare_cr(head) || parsed != head.size() || !parsed_cleanly(e.response) || e.bad_field || status == 101 ||
        !is_status_line(first_line(head), static_cast<unsigned>(status)))
        return origin_failed(c, 502, "sent a response head that does not parse");
    if (status < 200) {
        build_client_head(first_line(head), e.fields, ClientConnection::keep_alive_implied, e.client_head);
        c.out.consume(head_length);
        e.response_complete = false;
        return;
    }
    e.status = status;
    e.reason = smp::protocol::end_reason_for_status(status, smp::protocol::StatusFrom::origin);
    e.rate_start_ms = uv_now(loop_);
    e.etag = e.field(Field::etag);
    // An origin without entity tags (python's http.server) still names a
    // version of the file by its date: the downloads need one or the other.
    if (e.etag.empty()) {
        const std::string_view modified = e.field(Field::last_modified);
        if (!modified.empty()) {
            e.etag = "W/\"lm:";
            e.etag += modified;
            e.etag += '"';
        }
    }
    const bool has_length = (e.response.flags & F_CONTENTLENGTH) != 0;
    const ContentRange content_range = parse_content_range(e.field(Field::content_range));
    if ((status == 206 || status == 416) && content_range.valid) e.file_size = content_range.total;
    if (status == 200 && has_length) e.file_size = static_cast<int64_t>(e.response.content_length);
    // A multipart 206 carries its ranges inside the body: its bytes are not file bytes.
    e.track_body = !e.head_request && (status == 200 || (status == 206 && content_range.satisfied));
    e.body_map.start(status == 206 ? content_range.first : 0);

    // A body that ends when the origin closes ends the client's connection too.
    const bool no_body = e.response_complete;
    if (!no_body && !(e.response.flags & F_CHUNKED) && !has_length) e.close_after = true;
    if (stopping_) e.close_after = true;
    ClientConnection connection = ClientConnection::keep_alive_implied;
    if (e.close_after)
        connection = ClientConnection::close;
    else if (e.request.http_minor == 0)
        connection = ClientConnection::keep_alive;
    build_client_head(first_line(head), e.fields, connection, e.client_head);
    e.origin_keeps_alive = smp::http::keeps_alive(e.response.http_minor, e.connection_options());
    e.fields.clear();
    c.out.consume(head_length);
    e.response_head_done = true;
    upstream_success();
}

bool WorkerState::send_to_client(Connection& c) {
    Exchange& e = c.exchange;
    if (!c.writable) return false;
    const size_t head_left = e.client_head.size() - e.client_head_sent;
    if (head_left == 0 && e.response_body_ready == 0) return flush_to_client(c);
    const size_t body = settings_.limit_rate > 0 ? rate_budget(c, e.response_body_ready) : e.response_body_ready;
    if (head_left == 0 && body == 0) return flush_to_client(c);
    // The rest of a response after which the connection closes waits for the
    // FIN, and over TLS the close_notify (finish_exchange, then linger).
    const bool last = e.close_after && e.response_complete && body == e.response_body_ready;
    const ssize_t sent =
        send_head_and_body(c.fd, c.tls.get(), e.client_head, e.client_head_sent, c.out.data + c.out.begin, body,
                           last ? smp::tls::Stream::Then::close : smp::tls::Stream::Then::unknown);
    if (sent < 0) {
        if (would_block(errno)) {
            c.writable = false;
            return false;
        }
        close_connection(c, peer_gone(errno) ? SMP_END_CLIENT_CLOSED : SMP_END_WRITE_ERROR);
        return false;
    }
    size_t taken = static_cast<size_t>(sent);
    // The head string ends with a local response's body, when there is one.
    const size_t from_head = std::min(taken, head_left);
    const size_t head_only = e.client_head.size() - e.local_body_length;
    const size_t header_part = e.client_head_sent < head_only ? std::min(from_head, head_only - e.client_head_sent) : 0;
    e.header_bytes += header_part;
    e.body_bytes += from_head - header_part;
    e.client_head_sent += from_head;
    taken -= from_head;
    if (taken > 0) {
        c.out.consume(taken);
        e.response_body_ready -= taken;
        e.wire_sent += taken;
        e.body_bytes += taken;
        if (e.track_body) e.body_map.deliver(e.wire_sent, e.intervals);
    }
    const uint64_t now = uv_now(loop_);
    c.client_progress_ms = now;
    if (now - e.last_progress_report_ms >= 1000) {
        e.last_progress_report_ms = now;
        report(c, SMP_END_COMPLETED, false);
    }
    return true;
}

bool WorkerState::flush_to_client(Connection& c) {
    if (!tls_pending(c.tls)) return false;
    if (c.tls->flush()) {
        c.client_progress_ms = uv_now(loop_);
        return true;
    }
    if (would_block(errno)) {
        c.writable = false;
        return false;
    }
    close_connection(c, peer_gone(errno) ? SMP_END_CLIENT_CLOSED : SMP_END_WRITE_ERROR);
    return false;
}

size_t WorkerState::rate_budget(Connection& c, size_t want) {
    Exchange& e = c.exchange;
    if (c.paused) return 0;
    if (e.local_response || e.rate_start_ms == 0 || want == 0) return want;
    // As nginx and http_download: limit_rate_after bytes at once, then the
    // rate, counted from the response head (body bytes as relayed).
    const uint64_t now = uv_now(loop_);
    const smp::http::RateAllowance allowance =
        smp::http::rate_allowance(settings_.limit_rate, settings_.limit_rate_after, e.rate_start_ms, e.wire_sent, now);
    if (allowance.bytes > 0) return static_cast<size_t>(std::min<uint64_t>(want, allowance.bytes));
    park(c, now + allowance.wait_ms, on_pace);
    return 0;
}

void WorkerState::on_pace(uv_timer_t* timer) {
    auto& self = of<WorkerState>(timer);
    const uint64_t now = uv_now(self.loop_);
    for (Connection* c : smp::http::take_resumable(self.paused_, now)) {
        c->client_progress_ms = now;  // the wait was the limit's, not the client's: send_timeout counts from here
        self.pump(*c);
    }
    if (self.paused_.empty()) uv_timer_stop(timer);
}

void WorkerState::respond_locally(Connection& c, int status) {
    Exchange& e = c.exchange;
    // Whatever the origin connection was doing, it is not finishing this exchange.
    close_upstream(c);
    c.out.begin = c.out.end = 0;
    e.local_response = true;
    e.status = status;
    e.reason = smp::protocol::end_reason_for_status(status);
    // A request that was not read to its end leaves the connection unusable,
    // as does one that could not be understood.
    if (!e.request_complete || smp::protocol::status_closes_connection(status) || stopping_) e.close_after = true;
    smp::protocol::append_error_head(e.client_head, status, dates_.now());
    smp::protocol::end_head(e.client_head, e.close_after, e.request.http_minor);
    if (!e.head_request) smp::protocol::append_error_body(e.client_head, status);
    e.local_body_length = e.head_request ? 0 : smp::protocol::error_body_length(status);
    e.response_head_done = true;
    e.response_complete = true;
    e.response_body_ready = 0;
    e.track_body = false;
}

void WorkerState::origin_failed(Connection& c, int status, const char* what) {
    Exchange& e = c.exchange;
    const bool reused = c.upstream != nullptr && c.upstream->exchanges > 0;
    close_upstream(c);
    if (settings_.mode == Mode::tcp || c.phase == Phase::stream) {
        upstream_failure(what);
        return close_connection(c, SMP_END_UPSTREAM_ERROR);
    }
    // An origin may close a kept connection just as a request goes out on it:
    // the request goes again, once, on a fresh connection, when nothing of
    // its body has left and nothing of the response has come.
    if (reused && !e.retried && !e.request_body_sent && !e.response_head_done && e.client_head.empty()) {
        e.retried = true;
        e.upstream_head_sent = 0;
        c.out.begin = c.out.end = 0;
        connect_origin(c);
        return;
    }
    upstream_failure(what);
    // Once the client has part of the response, closing is all that says it failed.
    if (e.client_head_sent > 0) return close_connection(c, SMP_END_UPSTREAM_ERROR);
    e.client_head.clear();
    respond_locally(c, status);
}

}  // namespace smp::forward
