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

// ---- requests -----------------------------------------------------------------

bool WorkerState::read_request_head(Connection& c) {
    if (c.in.data == nullptr) take_buffer(c.in);
    const size_t limit = settings_.max_header_size;
    bool moved = false;
    // Empty lines before a request line are ignored (RFC 9112 §2.2), and
    // count toward the limit.
    const auto find_end = [&] {
        const std::string_view received{c.in.data + c.in.begin, std::min(c.in.size(), limit)};
        const size_t empty_lines = leading_empty_lines(received);
        const size_t end = head_end(received.substr(empty_lines));
        return end == 0 ? 0 : empty_lines + end;
    };
    size_t end = find_end();
    if (end == 0 && c.in.size() < limit && c.readable && !c.eof) {
        const size_t room = std::min(c.in.make_room(), limit - c.in.size());
        const ssize_t n = smp::tls::receive(c.tls.get(), c.fd, c.in.data + c.in.end, room);
        if (n > 0) {
            if (c.in.empty()) {
                c.request_start_us = wall_clock_us();
                c.phase_started_ms = uv_now(loop_);
                set_phase(c, SMP_PHASE_READING);
            }
            c.in.end += static_cast<size_t>(n);
            moved = true;
            end = find_end();
        } else if (n < 0 && would_block(errno)) {
            c.readable = false;
        } else {
            // End of stream, or an error, before a whole request arrived.
            const smp_end_reason reason = n == 0 ? SMP_END_CLIENT_CLOSED : SMP_END_READ_ERROR;
            if (!c.in.empty()) report(c, reason, true);
            close_connection(c, reason);
            return false;
        }
    }
    if (end > 0) {
        start_exchange(c, end);
        return true;
    }
    if (c.in.size() >= limit) {
        // No whole head within the limit.
        start_exchange(c, 0);
        respond_locally(c, smp::http::oversized_head_status({c.in.data + c.in.begin, c.in.size()}));
        return true;
    }
    return moved;
}

void WorkerState::start_exchange(Connection& c, size_t head_length) {
    Exchange& e = c.exchange;
    const uint64_t now = uv_now(loop_);
    ++c.requests;
    e.start_us = c.request_start_us != 0 ? c.request_start_us : wall_clock_us();
    e.last_progress_report_ms = now;
    c.phase = Phase::exchange;
    set_phase(c, SMP_PHASE_WRITING);
    c.client_progress_ms = now;
    c.origin_progress_ms = now;
    // An oversized head is answered from what of it arrived.
    e.received_bytes = head_length > 0 ? head_length : c.in.size();
    if (head_length == 0) return;  // the caller answers an oversized request

    // The empty lines before the request line are dropped here: the origin
    // gets a head written from what was parsed.
    const std::string_view received{c.in.data + c.in.begin, head_length};
    const std::string_view head = received.substr(leading_empty_lines(received));
    const int head_status = smp::http::parse_request_head(head, e.request, e);
    if (head_status == 0) {
        e.method = http_method_str(static_cast<http_method>(e.request.method));
        e.target = e.target_view;
        e.user_agent = e.field(Field::user_agent);
        e.referer = e.field(Field::referer);
        e.range = e.field(Field::range);
        e.head_request = e.request.method == HTTP_HEAD;
        // By its version and its Connection fields, not by http_parser's reading of them.
        e.close_after = !smp::http::keeps_alive(e.request.http_minor, e.connection_options());
    }
    // Whatever is wrong, the head is answered, and then what follows it is
    // not a request that can be trusted: 4xx and close.
    auto refuse = [&](int status, std::string_view why = {}) {
        c.in.consume(head_length);
        if (!why.empty() && core_->log_enabled(SMP_LOG_DEBUG)) {
            char message[200];
            std::snprintf(message, sizeof message, "%d to %s:%u: %.*s", status, c.client_ip, c.info.client_port,
                          static_cast<int>(why.size()), why.data());
            core_->log(SMP_LOG_DEBUG, kModule, message);
        }
        respond_locally(c, status);
    };
    // What http_parser lets through but another parser may read otherwise
    // (docs/forward.md, "Request framing and smuggling").
    if (const std::string_view problem = head_problem(head); !problem.empty()) return refuse(400, problem);
    if (head_status != 0) return refuse(head_status);
    if (!is_request_target(e.target)) return refuse(400, "a control character in the request target");
    // This is a reverse proxy: a tunnel through it is not offered.
    if (e.request.method == HTTP_CONNECT) return refuse(501);
    if (!smp::http::host_fields_valid(e.request.http_minor, e.count(Field::host), e.field(Field::host)))
        return refuse(400, "no Host, several, or one that is not uri-host [:port]");
    if (const std::string_view problem = request_fields_problem(e.fields, e.request.http_minor); !problem.empty())
        return refuse(400, problem);
    e.request_chunked = (e.request.flags & F_CHUNKED) != 0;
    if (e.request_chunked) e.request_framing.start(settings_.max_header_size);

    // The path as it would be served, for the records; the origin gets the
    // target as received.
    http_parser_url url;
    http_parser_url_init(&url);
    if (e.target != "*") {
        if (http_parser_parse_url(e.target.data(), e.target.size(), 0, &url) != 0) return refuse(400);
        std::string_view path = "/";
        if (url.field_set & (1 << UF_PATH))
            path = std::string_view(e.target).substr(url.field_data[UF_PATH].off, url.field_data[UF_PATH].len);
        if (smp::http::normalize_path(path, e.path) != smp::http::PathError::none) return refuse(400);
    }

    // The client behind a trusted proxy: only a trusted proxy's word is taken
    // (trusted_proxy is ABI 1.1).
    const std::string_view forwarded = e.field(Field::forwarded);
    const std::string_view x_forwarded_for = e.field(Field::x_forwarded_for);
    if ((!forwarded.empty() || !x_forwarded_for.empty()) && trusted_proxy(c.client_ip))
        e.has_forwarded_client = smp::http::forwarded_client(
            forwarded, x_forwarded_for, [this](const char* ip) { return trusted_proxy(ip); }, e.forwarded_client);

    // Limits: refused before the origin hears of the request. A connection
    // past max_connections_per_ip gets 429 for its request and is closed.
    if (c.over_limit) {
        e.close_after = true;
        return refuse(429);
    }
    build_upstream_head({e.method, e.target, e.request.http_minor}, e.fields, c.client_ip, e.upstream_head);
    e.fields.clear();
    // An upgrade is not relayed (its fields were dropped): the origin answers
    // it as a plain request, its body included.
    if (stopping_) e.close_after = true;
    c.in.consume(head_length);
    // unique_ip: one download (GET) of this path by this client at a time
    // (the client behind a trusted proxy); a HEAD or another method takes
    // none. While the plugins' shared counter is asked, the exchange waits
    // (step_http) and the origin hears nothing.
    if (settings_.unique_ip && e.request.method == HTTP_GET) {
        const uint64_t key =
            smp::http::limit_key("download", e.has_forwarded_client ? e.forwarded_client.data() : c.client_ip, e.path);
        if (slots_->acquire(e.download_slot, key, 1, on_download_slot, &c) == smp::http::SlotAnswer::refused)
            respond_locally(c, 429);
    }
}

void WorkerState::on_download_slot(void* data, int answer) {
    Connection& c = *static_cast<Connection*>(data);
    WorkerState& self = *c.worker;
    if (self.slots_->answered(c.exchange.download_slot, answer) == smp::http::SlotAnswer::refused)
        self.respond_locally(c, 429);
    self.pump(c);
}

bool WorkerState::relay_request(Connection& c) {
    Exchange& e = c.exchange;
    if (e.request_complete || e.local_response) return false;
    bool moved = false;
    for (int pass = 0; pass < 2; ++pass) {
        if (c.in.size() > e.request_body_ready) {
            // Only this request's body is passed on; the parser stops at its end.
            const char* at = c.in.data + c.in.begin + e.request_body_ready;
            size_t length = c.in.size() - e.request_body_ready;
            // A chunked body is relayed as received once its framing is
            // strict, and http_parser must end it where the check did.
            if (e.request_chunked) length = e.request_framing.feed({at, length});
            const size_t parsed = http_parser_execute(&e.request, &smp::http::kRequestParserSettings, at, length);
            const bool framing_agrees = !e.request_chunked || (!e.request_framing.failed() && parsed == length &&
                                                               e.request_complete == e.request_framing.done());
            if (!parsed_cleanly(e.request) || !framing_agrees) {
                e.close_after = true;
                if (e.client_head.empty()) {
                    respond_locally(c, 400);
                    return true;
                }
                close_connection(c, SMP_END_BAD_REQUEST);
                return false;
            }
            e.request_body_ready += parsed;
            e.received_bytes += parsed;
            moved = moved || parsed > 0;
        }
        if (e.request_complete || !c.readable || c.eof || pass == 1) break;
        if (c.in.data == nullptr) take_buffer(c.in);
        const size_t room = c.in.make_room();
        if (room == 0) break;  // the origin has not taken what we hold
        const ssize_t n = smp::tls::receive(c.tls.get(), c.fd, c.in.data + c.in.end, room);
        if (n > 0) {
            c.in.end += static_cast<size_t>(n);
            c.client_progress_ms = uv_now(loop_);
            moved = true;
        } else if (n < 0 && would_block(errno)) {
            c.readable = false;
            break;
        } else {
            close_connection(c, n == 0 ? SMP_END_CLIENT_CLOSED : SMP_END_READ_ERROR);
            return false;
        }
    }
    return moved;
}

bool WorkerState::send_to_origin(Connection& c) {
    Exchange& e = c.exchange;
    Upstream* u = c.upstream;
    if (u == nullptr || !u->connected || !u->writable || e.local_response) return false;
    const size_t head_left = e.upstream_head.size() - e.upstream_head_sent;
    if (head_left == 0 && e.request_body_ready == 0) return flush_to_origin(c);
    const ssize_t sent = send_head_and_body(u->fd, u->tls.get(), e.upstream_head, e.upstream_head_sent,
                                            c.in.data + c.in.begin, e.request_body_ready);
    if (sent < 0) {
        if (would_block(errno)) {
            u->writable = false;
            return false;
        }
        origin_failed(c, 502, std::strerror(errno));
        return true;
    }
    size_t taken = static_cast<size_t>(sent);
    const size_t from_head = std::min(taken, head_left);
    e.upstream_head_sent += from_head;
    taken -= from_head;
    if (taken > 0) {
        c.in.consume(taken);
        e.request_body_ready -= taken;
        e.request_body_sent = true;
    }
    c.origin_progress_ms = uv_now(loop_);
    return true;
}

bool WorkerState::flush_to_origin(Connection& c) {
    Upstream* u = c.upstream;
    if (!tls_pending(u->tls)) return false;
    if (u->tls->flush()) {
        c.origin_progress_ms = uv_now(loop_);
        return true;
    }
    if (would_block(errno)) {
        u->writable = false;
        return false;
    }
    origin_failed(c, 502, std::strerror(errno));
    return true;
}

}  // namespace smp::forward
