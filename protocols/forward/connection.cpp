#include "connection.hpp"

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

constexpr const char* kModule = "forward";
// Moves per wake-up of one connection before the others get their turn; the
// level-triggered poll brings it back at once.
constexpr int kMaxRounds = 64;
constexpr uint64_t kLingerMs = 2'000;
constexpr uint64_t kPaceIntervalMs = 10;  // how often connections waiting for rate budget are looked at
// While the origin keeps failing, a line every so often says how many times.
constexpr uint64_t kFailureLogIntervalMs = 60'000;

int64_t wall_clock_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

bool peer_gone(int error) { return error == EPIPE || error == ECONNRESET; }

bool has_room(const RelayBuffer& buffer) { return buffer.data == nullptr || !buffer.full(); }

// ---- http_parser callbacks: they note where things are, and stop the parser
// at the end of a message so that the bytes after it stay for the next one.

Exchange& exchange_of(http_parser* parser) { return *static_cast<Exchange*>(parser->data); }

int on_url(http_parser* parser, const char* at, size_t length) {
    exchange_of(parser).target_view = {at, length};
    return 0;
}

int on_header_field(http_parser* parser, const char* at, size_t length) {
    Exchange& e = exchange_of(parser);
    if (!is_token({at, length})) e.bad_field = true;
    e.fields.push_back({{at, length}, {}});
    e.last_was_value = false;
    return 0;
}

int on_header_value(http_parser* parser, const char* at, size_t length) {
    Exchange& e = exchange_of(parser);
    const std::string_view value{at, length};
    // A head is parsed in one call, so a second value in a row is a folded
    // line (obs-fold), which a proxy must not pass on (RFC 9112 §5.2).
    if (e.fields.empty() || e.last_was_value || value.find_first_of(std::string_view("\r\n\0", 3)) != value.npos)
        e.bad_field = true;
    else
        e.fields.back().value = value;
    e.last_was_value = true;
    return 0;
}

int on_request_complete(http_parser* parser) {
    exchange_of(parser).request_complete = true;
    http_parser_pause(parser, 1);
    return 0;
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

const http_parser_settings kRequestSettings = [] {
    http_parser_settings settings{};
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_message_complete = on_request_complete;
    return settings;
}();

const http_parser_settings kResponseSettings = [] {
    http_parser_settings settings{};
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_response_headers_complete;
    settings.on_body = on_response_body;
    settings.on_message_complete = on_response_complete;
    return settings;
}();

bool parsed_cleanly(const http_parser& parser) {
    const auto error = HTTP_PARSER_ERRNO(&parser);
    return error == HPE_OK || error == HPE_PAUSED;
}

std::string_view field_value(const std::vector<HeaderField>& fields, std::string_view name) {
    std::string_view found;
    for (const HeaderField& field : fields)
        if (same_name(field.name, name)) found = field.value;
    return found;
}

int count_fields(const std::vector<HeaderField>& fields, std::string_view name) {
    return static_cast<int>(std::count_if(fields.begin(), fields.end(),
                                          [&](const HeaderField& field) { return same_name(field.name, name); }));
}

// Whether a message lets its connection persist, by its version and its
// Connection fields (http1.hpp), not by http_parser's reading of them.
bool keeps_alive(const http_parser& parser, const std::vector<HeaderField>& fields) {
    smp::http::ConnectionOptions options;
    for (const HeaderField& field : fields)
        if (smp::http::field_of(field.name) == smp::http::Field::connection) options.add(field.value);
    return smp::http::keeps_alive(parser.http_minor, options);
}

const char* c_string(const std::string& text) { return text.empty() ? nullptr : text.c_str(); }

// Sends what is left of a head, then the bytes of a buffer that are ready,
// in one call: -1 with errno on error.
ssize_t send_head_and_body(int fd, const std::string& head, size_t head_sent, const char* body, size_t body_length) {
    std::array<iovec, 2> vectors;
    size_t count = 0;
    if (head_sent < head.size())
        vectors[count++] = {const_cast<char*>(head.data()) + head_sent, head.size() - head_sent};
    if (body_length > 0) vectors[count++] = {const_cast<char*>(body), body_length};
    if (count == 0) return 0;
    msghdr message{};
    message.msg_iov = vectors.data();
    message.msg_iovlen = count;
    return sendmsg(fd, &message, MSG_NOSIGNAL);
}

}  // namespace

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
        const bool moved = c.phase == Phase::stream ? step_stream(c) : step_http(c);
        if (!moved) break;
    }
    if (!c.closing) update_polls(c);
}

bool WorkerState::step_http(Connection& c) {
    if (c.phase == Phase::lingering) {
        // Discard what the client still sends, so that closing does not reset
        // the connection before it has read our last response.
        std::array<char, 4096> discard;
        for (;;) {
            const ssize_t n = read(c.fd, discard.data(), discard.size());
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
            const ssize_t n = read(c.upstream->fd, &byte, 1);
            if (n < 0 && would_block(errno))
                c.upstream->readable = false;
            else
                close_upstream(c);
        }
        return read_request_head(c);
    }
    Exchange& e = c.exchange;
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
    const bool response_sent =
        e.response_complete && e.client_head_sent == e.client_head.size() && e.response_body_ready == 0;
    if (response_sent && (e.request_complete || e.close_after)) {
        finish_exchange(c);
        return true;
    }
    return moved;
}

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
        const ssize_t n = read(c.fd, c.in.data + c.in.end, room);
        if (n > 0) {
            if (c.in.empty()) {
                c.request_start_us = wall_clock_us();
                c.phase_started_ms = uv_now(loop_);
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
        // No whole head within the limit: the request line alone is too long
        // (414), or the header fields are (431).
        const bool line_complete = std::memchr(c.in.data + c.in.begin, '\n', c.in.size()) != nullptr;
        start_exchange(c, 0);
        respond_locally(c, line_complete ? 431 : 414);
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
    c.client_progress_ms = now;
    c.origin_progress_ms = now;
    // An oversized head is answered from what of it arrived.
    e.received_bytes = head_length > 0 ? head_length : c.in.size();
    if (head_length == 0) return;  // the caller answers an oversized request

    // The empty lines before the request line are dropped here: the origin
    // gets a head written from what was parsed.
    const std::string_view received{c.in.data + c.in.begin, head_length};
    const std::string_view head = received.substr(leading_empty_lines(received));
    http_parser_init(&e.request, HTTP_REQUEST);
    e.request.data = &e;
    const size_t parsed = http_parser_execute(&e.request, &kRequestSettings, head.data(), head.size());
    const bool parsed_all = parsed == head.size() && parsed_cleanly(e.request) && !e.bad_field;
    if (parsed_all) {
        e.method = http_method_str(static_cast<http_method>(e.request.method));
        e.target = e.target_view;
        e.user_agent = field_value(e.fields, "user-agent");
        e.referer = field_value(e.fields, "referer");
        e.range = field_value(e.fields, "range");
        e.head_request = e.request.method == HTTP_HEAD;
        e.close_after = !keeps_alive(e.request, e.fields);
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
    if (!parsed_all || e.target.empty()) return refuse(400);
    // What http_parser lets through but another parser may read otherwise
    // (docs/forward.md, "Request framing and smuggling").
    if (const std::string_view problem = head_problem(head); !problem.empty()) return refuse(400, problem);
    if (!is_request_target(e.target)) return refuse(400, "a control character in the request target");
    if (const int status = smp::http::check_request_version(head); status != 0) return refuse(status);
    // This is a reverse proxy: a tunnel through it is not offered.
    if (e.request.method == HTTP_CONNECT) return refuse(501);
    if (!smp::http::host_fields_valid(e.request.http_minor, count_fields(e.fields, "host"),
                                      field_value(e.fields, "host")))
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
    const bool core_knows_proxies = SMP_HAS(core_, trusted_proxy);
    const std::string_view forwarded = field_value(e.fields, "forwarded");
    const std::string_view x_forwarded_for = field_value(e.fields, "x-forwarded-for");
    if (core_knows_proxies && (!forwarded.empty() || !x_forwarded_for.empty()) &&
        core_->trusted_proxy(worker_, c.client_ip))
        e.has_forwarded_client = smp::http::forwarded_client(
            forwarded, x_forwarded_for, [this](const char* ip) { return core_->trusted_proxy(worker_, ip) != 0; },
            e.forwarded_client);

    // Limits: refused before the origin hears of the request. A connection
    // past max_connections_per_ip gets 429 for its request and is closed.
    if (c.over_limit) {
        e.close_after = true;
        return refuse(429);
    }
    // unique_ip: one download (GET) of this path by this client at a time
    // (the client behind a trusted proxy); a HEAD or another method takes none.
    if (settings_.unique_ip && e.request.method == HTTP_GET) {
        const uint64_t key =
            smp::http::limit_key("download", e.has_forwarded_client ? e.forwarded_client.data() : c.client_ip, e.path);
        if (!slots_->acquire(key, 1, e.download_slot_shared)) return refuse(429);
        e.download_slot = key;
    }

    build_upstream_head({e.method, e.target, e.request.http_minor}, e.fields, c.client_ip, e.upstream_head);
    e.fields.clear();
    // An upgrade is not relayed (its fields were dropped): the origin answers
    // it as a plain request, its body included.
    if (stopping_) e.close_after = true;
    c.in.consume(head_length);
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
            const size_t parsed = http_parser_execute(&e.request, &kRequestSettings, at, length);
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
        const ssize_t n = read(c.fd, c.in.data + c.in.end, room);
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
    if (head_left == 0 && e.request_body_ready == 0) return false;
    const ssize_t sent =
        send_head_and_body(u->fd, e.upstream_head, e.upstream_head_sent, c.in.data + c.in.begin, e.request_body_ready);
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

// ---- responses ----------------------------------------------------------------

bool WorkerState::read_response(Connection& c) {
    Exchange& e = c.exchange;
    Upstream* u = c.upstream;
    if (u == nullptr || !u->connected || !u->readable || e.response_complete || e.local_response) return false;
    if (c.out.data == nullptr) take_buffer(c.out);
    const size_t room = c.out.make_room();
    if (room == 0) return false;  // the client has not taken what we hold
    const ssize_t n = read(u->fd, c.out.data + c.out.end, room);
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
    e.response.data = &e;
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
    e.etag = field_value(e.fields, "etag");
    // An origin without entity tags (python's http.server) still names a
    // version of the file by its date: the downloads need one or the other.
    if (e.etag.empty()) {
        const std::string_view modified = field_value(e.fields, "last-modified");
        if (!modified.empty()) {
            e.etag = "W/\"lm:";
            e.etag += modified;
            e.etag += '"';
        }
    }
    const bool has_length = (e.response.flags & F_CONTENTLENGTH) != 0;
    const ContentRange content_range = parse_content_range(field_value(e.fields, "content-range"));
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
    e.origin_keeps_alive = keeps_alive(e.response, e.fields);
    e.fields.clear();
    c.out.consume(head_length);
    e.response_head_done = true;
    upstream_success();
}

bool WorkerState::send_to_client(Connection& c) {
    Exchange& e = c.exchange;
    if (!c.writable) return false;
    const size_t head_left = e.client_head.size() - e.client_head_sent;
    if (head_left == 0 && e.response_body_ready == 0) return false;
    const size_t body = settings_.limit_rate > 0 ? rate_budget(c, e.response_body_ready) : e.response_body_ready;
    if (head_left == 0 && body == 0) return false;
    const ssize_t sent = send_head_and_body(c.fd, e.client_head, e.client_head_sent, c.out.data + c.out.begin, body);
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

size_t WorkerState::rate_budget(Connection& c, size_t want) {
    Exchange& e = c.exchange;
    if (c.paused) return 0;
    if (e.local_response || e.rate_start_ms == 0 || want == 0) return want;
    // As nginx and http_download: limit_rate_after bytes at once, then the
    // rate, counted from the response head (body bytes as relayed).
    const uint64_t rate = settings_.limit_rate;
    const uint64_t now = uv_now(loop_);
    const uint64_t allowed = settings_.limit_rate_after + rate * (now - e.rate_start_ms) / 1000;
    if (allowed > e.wire_sent) return static_cast<size_t>(std::min<uint64_t>(want, allowed - e.wire_sent));
    const uint64_t quantum = std::max<uint64_t>(rate / 10, 1);
    c.paused = true;
    c.resume_ms = now + (e.wire_sent + quantum - allowed) * 1000 / rate + 1;
    paused_.push_back(&c);
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&pace_timer_)))
        uv_timer_start(&pace_timer_, on_pace, kPaceIntervalMs, kPaceIntervalMs);
    return 0;
}

void WorkerState::on_pace(uv_timer_t* timer) {
    auto& self = *static_cast<WorkerState*>(timer->data);
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
    if (!e.request_complete || status == 400 || status == 414 || status == 431 || status == 501 || status == 505 ||
        stopping_)
        e.close_after = true;
    const char* phrase = http_status_str(static_cast<http_status>(status));
    char body[64];
    const int body_length = std::snprintf(body, sizeof body, "%d %s\n", status, phrase);
    char date[smp::http::kHttpDateLength + 1] = {};
    smp::http::format_http_date(time(nullptr), date);
    char retry_after[32];
    std::snprintf(retry_after, sizeof retry_after, "Retry-After: %d\r\n", kRetryAfterSeconds);
    char head[256];
    const int head_length = std::snprintf(head, sizeof head,
                                          "HTTP/1.1 %d %s\r\nServer: smprotocol\r\nDate: %s\r\nContent-Type: "
                                          "text/plain\r\nContent-Length: %d\r\n%s%s\r\n",
                                          status, phrase, date, body_length, status == 429 ? retry_after : "",
                                          e.close_after               ? "Connection: close\r\n"
                                          : e.request.http_minor == 0 ? "Connection: keep-alive\r\n"
                                                                      : "");
    e.client_head.append(head, static_cast<size_t>(head_length));
    if (!e.head_request) e.client_head.append(body, static_cast<size_t>(body_length));
    e.local_body_length = e.head_request ? 0 : static_cast<size_t>(body_length);
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

// ---- ending -----------------------------------------------------------------

void WorkerState::finish_exchange(Connection& c) {
    Exchange& e = c.exchange;
    if (e.status == 200 && e.file_size < 0 && e.track_body) e.file_size = static_cast<int64_t>(e.body_map.decoded());
    report(c, e.reason, true);
    if (e.reason == SMP_END_COMPLETED && (e.status == 200 || e.status == 206) && e.method == "GET" &&
        core_->log_enabled(SMP_LOG_INFO)) {
        const double seconds = static_cast<double>(wall_clock_us() - e.start_us) / 1e6;
        char message[512];
        std::snprintf(message, sizeof message, "File downloaded \"/%s\" %d from %s, %llu bytes to %s:%u in %.3f s",
                      e.path.c_str(), e.status, settings_.origin_name.c_str(),
                      static_cast<unsigned long long>(e.body_bytes), c.client_ip, c.info.client_port, seconds);
        core_->log(SMP_LOG_INFO, kModule, message);
    }
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
    release_download_slot(e);
    e.reset();
    c.request_start_us = 0;
    if (c.out.empty()) give_buffer(c.out);
    if (!keep) return linger(c);
    c.phase = Phase::request_head;
    c.phase_started_ms = uv_now(loop_);
    if (c.in.empty())
        give_buffer(c.in);
    else
        c.request_start_us = wall_clock_us();  // a pipelined request is already here
}

void WorkerState::release_download_slot(Exchange& e) {
    if (e.download_slot != 0) slots_->release(e.download_slot, e.download_slot_shared);
    e.download_slot = 0;
}

void WorkerState::linger(Connection& c) {
    close_upstream(c);
    give_buffer(c.in);
    give_buffer(c.out);
    c.phase = Phase::lingering;
    c.phase_started_ms = uv_now(loop_);
    ::shutdown(c.fd, SHUT_WR);
}

void WorkerState::close_connection(Connection& c, smp_end_reason reason) {
    if (c.closing) return;
    c.closing = true;
    if (c.phase == Phase::exchange || c.phase == Phase::stream) report(c, reason, true);
    release_download_slot(c.exchange);
    if (c.paused) std::erase(paused_, &c);
    c.paused = false;
    if (c.ip_slot != 0) slots_->release(c.ip_slot, c.ip_slot_shared);
    c.ip_slot = 0;
    close_upstream(c);
    give_buffer(c.in);
    give_buffer(c.out);
    if (core_->log_enabled(SMP_LOG_DEBUG)) {
        char message[200];
        std::snprintf(message, sizeof message,
                      "Connection closed with message \"%s\" (%s:%u, %llu request(s), %llu/%llu bytes in/out)",
                      smp_end_reason_name(reason), c.client_ip, c.info.client_port,
                      static_cast<unsigned long long>(c.requests), static_cast<unsigned long long>(c.bytes_from_client),
                      static_cast<unsigned long long>(c.bytes_to_client));
        core_->log(SMP_LOG_DEBUG, kModule, message);
    }
    // Unlink now; the memory goes in the close callback, once libuv let go.
    if (c.previous != nullptr) c.previous->next = c.next;
    if (c.next != nullptr) c.next->previous = c.previous;
    if (connections_ == &c) connections_ = c.next;
    uv_close(reinterpret_cast<uv_handle_t*>(&c.poll), on_client_closed);
}

void WorkerState::report(Connection& c, smp_end_reason reason, bool final) {
    const Exchange& e = c.exchange;
    const bool started = c.phase == Phase::exchange;
    smp_record record{};
    record.size = sizeof record;
    record.connection_id = c.info.connection_id;
    record.request_id =
        started || c.phase == Phase::stream ? c.requests : c.requests + 1;  // one cut short was never counted
    record.worker_id = worker_id_;
    record.module = kModule;
    record.node = node_;
    record.start_us = started ? e.start_us : c.request_start_us;
    record.end_us = wall_clock_us();
    record.client_ip = c.client_ip;
    record.client_port = c.info.client_port;
    record.file_size = -1;
    record.reason = reason;
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
    if (final)
        core_->close(worker_, &record);
    else
        core_->transfer(worker_, &record);
}

// ---- deadlines and events -----------------------------------------------------

void WorkerState::check_deadlines(Connection& c, uint64_t now) {
    const Settings& s = settings_;
    Upstream* u = c.upstream;
    if (u != nullptr && !u->connected && now - u->started_ms >= s.connect_timeout_ms) {
        origin_failed(c, 504, "no connection within connect_timeout");
        return pump(c);
    }
    switch (c.phase) {
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
    const bool request_sent =
        e.request_complete && e.upstream_head_sent == e.upstream_head.size() && e.request_body_ready == 0;
    const bool waiting = request_sent && !e.response_complete && has_room(c.out);
    const bool stalled = !u->writable && !request_sent;
    if ((waiting && now - c.origin_progress_ms >= s.read_timeout_ms) ||
        (stalled && now - c.origin_progress_ms >= s.send_timeout_ms)) {
        origin_failed(c, 504, "no byte within read_timeout");
        pump(c);
    }
}

void WorkerState::update_polls(Connection& c) {
    int client = 0;
    int origin = 0;
    Upstream* u = c.upstream;
    const Exchange& e = c.exchange;
    switch (c.phase) {
        case Phase::request_head:
            if (!c.eof && (c.in.data == nullptr || c.in.size() < settings_.max_header_size)) client |= UV_READABLE;
            if (u != nullptr) origin |= UV_READABLE;  // to notice an idle origin closing
            break;
        case Phase::lingering: client |= UV_READABLE; break;
        case Phase::exchange:
            if (!e.request_complete && !e.local_response && !c.eof && has_room(c.in)) client |= UV_READABLE;
            if (e.client_head_sent < e.client_head.size() || (e.response_body_ready > 0 && !c.paused))
                client |= UV_WRITABLE;
            if (u != nullptr && !u->connected) {
                origin |= UV_WRITABLE;
            } else if (u != nullptr) {
                if (e.upstream_head_sent < e.upstream_head.size() || e.request_body_ready > 0) origin |= UV_WRITABLE;
                if (!e.response_complete && !u->eof && has_room(c.out)) origin |= UV_READABLE;
            }
            break;
        case Phase::stream:
            if (!c.eof && has_room(c.in)) client |= UV_READABLE;
            if (!c.out.empty()) client |= UV_WRITABLE;
            if (u != nullptr && !u->connected) {
                origin |= UV_WRITABLE;
            } else if (u != nullptr) {
                if (!u->eof && has_room(c.out)) origin |= UV_READABLE;
                if (!c.in.empty()) origin |= UV_WRITABLE;
            }
            break;
    }
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
    c.worker->pump(c);
}

void WorkerState::on_upstream_poll(uv_poll_t* handle, int status, int events) {
    auto& u = *static_cast<Upstream*>(handle->data);
    Connection& c = *u.owner;
    WorkerState& self = *c.worker;
    if (!u.connected) {
        int error = 0;
        socklen_t length = sizeof error;
        if (getsockopt(u.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
        if (error != 0) {
            self.origin_failed(c, 502, std::strerror(error));
            return self.pump(c);
        }
        u.connected = true;
        if (self.settings_.mode == Mode::tcp) self.upstream_success();
    }
    if (status < 0) u.poll_events = 0;  // libuv stopped the handle
    if (status < 0 || (events & UV_READABLE)) u.readable = true;
    if (status < 0 || (events & UV_WRITABLE)) u.writable = true;
    self.pump(c);
}

void WorkerState::on_client_closed(uv_handle_t* handle) {
    auto* c = static_cast<Connection*>(handle->data);
    WorkerState& self = *c->worker;
    ::close(c->fd);
    const smp_connection_info info = c->info;
    delete c;
    self.core_->disconnect(self.worker_, &info);
}

void WorkerState::on_upstream_closed(uv_handle_t* handle) {
    auto* u = static_cast<Upstream*>(handle->data);
    ::close(u->fd);
    delete u;
}

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
    u->connected = connected == 0;
    u->started_ms = uv_now(loop_);
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
    uv_close(reinterpret_cast<uv_handle_t*>(&u->poll), on_upstream_closed);
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
