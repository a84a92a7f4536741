#include "connection_internal.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "conditional.hpp"
#include "http_status.hpp"
#include "path.hpp"

namespace smp::forward {
namespace {

// ---- http_parser callbacks of a response, beside the common ones that
// gather its fields (head_parser.hpp); the parser stops at the end of the
// response, so that the bytes after it are not taken for its body.

Exchange& exchange_of(http_parser* parser) {
    return static_cast<Exchange&>(*static_cast<smp::http::ParsedHead*>(parser->data));
}

int on_response_headers_complete(http_parser* parser) {
    const Exchange& e = exchange_of(parser);
    const unsigned status = parser->status_code;
    // These responses have no body whatever their fields say (RFC 9112 §6.3).
    return e.head_request || status / 100 == 1 || status == 204 || status == 304 ? 1 : 0;
}

int on_response_body(http_parser* parser, const char* at, size_t length) {
    Exchange& e = exchange_of(parser);
    if (e.track_body) e.body_map.add(e.parse_base + static_cast<uint64_t>(at - e.parse_at), length);
    return 0;
}

int on_response_complete(http_parser* parser) {
    exchange_of(parser).response_complete = true;
    http_parser_pause(parser, 1);
    return 0;
}

}  // namespace

namespace detail {

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

bool peer_gone(int error) { return error == EPIPE || error == ECONNRESET; }

bool has_room(const RelayBuffer& buffer) { return buffer.data == nullptr || !buffer.full(); }

extern const http_parser_settings kResponseSettings = [] {
    http_parser_settings settings{};
    settings.on_header_field = smp::http::on_header_field;
    settings.on_header_value = smp::http::on_header_value;
    settings.on_headers_complete = on_response_headers_complete;
    settings.on_body = on_response_body;
    settings.on_message_complete = on_response_complete;
    return settings;
}();

bool parsed_cleanly(const http_parser& parser) {
    const auto error = HTTP_PARSER_ERRNO(&parser);
    return error == HPE_OK || error == HPE_PAUSED;
}

const char* c_string(const std::string& text) { return text.empty() ? nullptr : text.c_str(); }

// Sends what is left of a head, then the bytes of a buffer that are ready,
// in one call: -1 with errno on error.
ssize_t send_head_and_body(int fd, smp::tls::Stream* tls, const std::string& head, size_t head_sent, const char* body,
                           size_t body_length, smp::tls::Stream::Then then) {
    std::array<iovec, 2> vectors;
    size_t count = 0;
    if (head_sent < head.size())
        vectors[count++] = {const_cast<char*>(head.data()) + head_sent, head.size() - head_sent};
    if (body_length > 0) vectors[count++] = {const_cast<char*>(body), body_length};
    if (count == 0) return 0;
    return smp::tls::send(tls, fd, vectors.data(), count, then);
}

}  // namespace detail

using namespace detail;

void Exchange::reset() {
    // Every field back to its first value, but the strings and vectors keep
    // their room: the steady state allocates nothing.
    Exchange fresh;
    const auto keep = [](auto& from, auto& to) {
        from.clear();
        to = std::move(from);
    };
    keep(method, fresh.method);
    keep(target, fresh.target);
    keep(path, fresh.path);
    keep(user_agent, fresh.user_agent);
    keep(referer, fresh.referer);
    keep(range, fresh.range);
    keep(etag, fresh.etag);
    keep(upstream_head, fresh.upstream_head);
    keep(client_head, fresh.client_head);
    keep(fields, fresh.fields);
    keep(intervals, fresh.intervals);
    body_map.start(0);
    fresh.body_map = std::move(body_map);
    *this = std::move(fresh);
}

// ---- the pump: every wake-up moves what can move, then asks for the events
// that would let more move. Reading one side stops while the buffer toward
// the other side is full: that is the backpressure.

void WorkerState::pump(Connection& c) {
    for (int round = 0; round < kMaxRounds && !c.closing; ++round) {
        bool moved = false;
        if (c.phase == Phase::handshaking)
            moved = step_handshake(c);
        else
            moved = c.phase == Phase::stream ? step_stream(c) : step_http(c);
        if (!moved) break;
    }
    if (!c.closing) update_polls(c);
}

// HTTPS: the client's handshake comes first, within tls.handshake_timeout
// (check_deadlines). One that fails (garbage, a client that gave up, no
// protocol in common) asked nothing, so no request is recorded; the log tells.
bool WorkerState::step_handshake(Connection& c) {
    switch (c.tls->handshake()) {
        case smp::tls::Stream::Step::again: return false;
        case smp::tls::Stream::Step::failed:
            handshake_failures_.note(c.tls->failure(), c.logged_ip, c.tls->failure_detail(), core_, "forward",
                                     uv_now(loop_));
            close_connection(c, SMP_END_BAD_REQUEST);
            return false;
        case smp::tls::Stream::Step::done: break;
    }
    const uint64_t now = uv_now(loop_);
    c.phase = Phase::request_head;
    c.phase_started_ms = now;
    c.client_progress_ms = now;
    c.origin_progress_ms = now;
    return begin_relay(c);
}

bool WorkerState::step_http(Connection& c) {
    if (c.phase == Phase::lingering) {
        // Discard what the client still sends, so that closing does not reset
        // the connection before it has read our last response.
        std::array<char, 4096> discard;
        for (;;) {
            const ssize_t n = smp::tls::receive(c.tls.get(), c.fd, discard.data(), discard.size());
            if (n > 0) continue;
            if (n < 0 && would_block(errno)) {
                c.readable = false;
                return false;
            }
            close_connection(c, SMP_END_COMPLETED);
            return false;
        }
    }
    if (c.phase == Phase::request_head) {
        // A kept origin connection that the origin closes is let go now, not
        // found closed by the next request.
        if (c.upstream != nullptr && c.upstream->readable) {
            char byte;
            const ssize_t n = smp::tls::receive(c.upstream->tls.get(), c.upstream->fd, &byte, 1);
            if (n < 0 && would_block(errno))
                c.upstream->readable = false;
            else
                close_upstream(c);
        }
        return read_request_head(c);
    }
    Exchange& e = c.exchange;
    if (e.download_slot.waiting()) return false;  // on_download_slot pumps again
    bool moved = false;
    if (!e.local_response && c.upstream == nullptr && !connect_origin(c)) return true;
    moved |= relay_request(c);
    if (c.closing) return false;
    moved |= send_to_origin(c);
    if (c.closing) return false;
    moved |= read_response(c);
    if (c.closing) return false;
    moved |= send_to_client(c);
    if (c.closing) return false;
    const bool response_sent = e.response_complete && e.client_head_sent == e.client_head.size() &&
                               e.response_body_ready == 0 && !tls_pending(c.tls);
    if (response_sent && (e.request_complete || e.close_after)) {
        finish_exchange(c);
        return true;
    }
    return moved;
}

// ---- ending -----------------------------------------------------------------

void WorkerState::finish_exchange(Connection& c) {
    Exchange& e = c.exchange;
    if (e.status == 200 && e.file_size < 0 && e.track_body) e.file_size = static_cast<int64_t>(e.body_map.decoded());
    report(c, e.reason, true);
    if (e.reason == SMP_END_COMPLETED && (e.status == 200 || e.status == 206) && e.method == "GET")
        log_file_downloaded(c, kModule, e.path, e.status, e.body_bytes, e.start_us, settings_.origin_name);
    // The origin connection serves the next request when the response said
    // so, the request went whole, and nothing else came after the response.
    Upstream* u = c.upstream;
    if (u != nullptr) {
        ++u->exchanges;
        if (e.local_response || !e.request_complete || u->eof || !c.out.empty() || !e.origin_keeps_alive ||
            !http_should_keep_alive(&e.response))  // which also says whether the body ended with the connection
            close_upstream(c);
    }
    const bool keep = !e.close_after && !stopping_ && !c.eof;
    // The client may still be sending: a request not read to its end, or
    // one refused before it was.
    const bool unread = !e.request_complete || smp::protocol::status_closes_connection(e.status);
    release_download_slot(e);
    e.reset();
    c.request_start_us = 0;
    if (c.out.empty()) give_buffer(c.out);
    if (!keep) return linger(c, unread, c.in.size());
    c.phase = Phase::request_head;
    c.phase_started_ms = uv_now(loop_);
    set_phase(c, c.in.empty() ? SMP_PHASE_IDLE : SMP_PHASE_READING);
    if (c.in.empty())
        give_buffer(c.in);
    else
        c.request_start_us = wall_clock_us();  // a pipelined request is already here
}

void WorkerState::release_download_slot(Exchange& e) {
    if (slots_) slots_->release(e.download_slot);
}

void WorkerState::linger(Connection& c, bool unread, size_t buffered) {
    close_upstream(c);
    give_buffer(c.in);
    give_buffer(c.out);
    c.phase = Phase::lingering;
    set_phase(c, SMP_PHASE_IDLE);
    c.phase_started_ms = uv_now(loop_);
    if (c.tls) c.tls->close_notify();
    if (!may_have_unread(c, unread, buffered)) return close_connection(c, SMP_END_COMPLETED);
    shut_write(c);
}

void WorkerState::close_connection(Connection& c, smp_end_reason reason) {
    if (c.closing) return;
    c.closing = true;
    if (c.phase == Phase::exchange || c.phase == Phase::stream) report(c, reason, true);
    release_download_slot(c.exchange);
    close_upstream(c);
    give_buffer(c.in);
    give_buffer(c.out);
    char bytes[64];
    std::snprintf(bytes, sizeof bytes, ", %llu/%llu bytes in/out", static_cast<unsigned long long>(c.bytes_from_client),
                  static_cast<unsigned long long>(c.bytes_to_client));
    release_and_close(c, reason, kModule, bytes);
}

void WorkerState::report(Connection& c, smp_end_reason reason, bool final) {
    const Exchange& e = c.exchange;
    const bool started = c.phase == Phase::exchange;
    smp_record record =
        new_record(c, kModule, started || c.phase == Phase::stream, started ? e.start_us : c.request_start_us, reason);
    if (c.phase == Phase::stream) {
        // A relayed connection: no method, path or status; the body bytes are
        // those sent to the client, the received bytes those it sent.
        record.start_us = c.info.accepted_us;
        record.protocol = "tcp";
        record.body_bytes = c.bytes_to_client;
        record.received_bytes = c.bytes_from_client;
    } else {
        record.forwarded_ip = e.has_forwarded_client ? e.forwarded_client.data() : nullptr;
        record.method = c_string(e.method);
        record.path = e.path.empty() && e.status == 0 ? nullptr : e.path.c_str();
        record.target = c_string(e.target);
        if (!e.method.empty()) record.protocol = e.request.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
        record.user_agent = c_string(e.user_agent);
        record.referer = c_string(e.referer);
        record.range = c_string(e.range);
        record.etag = c_string(e.etag);
        record.file_size = e.file_size;
        record.status = e.status;
        record.intervals = e.intervals.data();
        record.interval_count = e.intervals.size();
        record.header_bytes = e.header_bytes;
        record.body_bytes = e.body_bytes;
        record.received_bytes = started ? e.received_bytes : c.in.size();  // else: a head cut short
    }
    record.tls_version = c.tls ? c.tls->version() : nullptr;  // static strings of OpenSSL's
    send_record(record, final);
}

}  // namespace smp::forward
