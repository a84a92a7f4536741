#include "server.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <optional>
#include <utility>

#include "page_files.hpp"
#include "path.hpp"
#include "report_format.hpp"
#include "secure_link.hpp"

namespace smp::dashboard {
namespace {

constexpr const char* kModule = "dashboard";
constexpr size_t kMaxHead = 16 * 1024;
// A live client that reads slower than the updates come is cut off here
// (its browser reconnects), rather than holding the worker's memory.
constexpr size_t kMaxLiveBacklog = 1024 * 1024;
constexpr uint64_t kSweepMs = 1000;

uint64_t now_ms() {
    using namespace std::chrono;
    return static_cast<uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

// An event's data is one line: JSON strings hold their line ends escaped,
// so the ones left are the layout's.
std::string one_line(std::string json) {
    std::replace(json.begin(), json.end(), '\n', ' ');
    return json;
}

}  // namespace

WorkerState::WorkerState(const Settings& settings, const smp_worker_context& context)
    : WorkerBase(settings.core, context, nullptr, 0, on_sweep, kSweepMs), settings_(settings) {
    uv_timer_init(loop_, &live_timer_);
    live_timer_.data = this;
}

void WorkerState::close_all_handles() {
    if (live_query_ != nullptr) core_->query_cancel(worker_, std::exchange(live_query_, nullptr));
    // The base frees this state once its own timers have closed; the live
    // timer closes first, and only then does the base begin.
    uv_close(reinterpret_cast<uv_handle_t*>(&live_timer_),
             [](uv_handle_t* handle) { static_cast<WorkerState*>(handle->data)->close_handles(); });
}

void WorkerState::accept(int fd, const smp_connection_info& info) {
    smp::protocol::AcceptSettings accept_settings;
    accept_settings.module = kModule;
    Connection* c = adopt(fd, info, accept_settings);
    if (c == nullptr) return;
    c->worker = this;
    c->allowed = settings_.allow.contains(c->client_ip);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = &c->head;
    start_connection(*c);
}

void WorkerState::start_connection(Connection& c) {
    c.active_ms = now_ms();
    set_poll(c, UV_READABLE);
}

void WorkerState::shutdown() {
    stopping_ = true;
    // Live streams never end by themselves: the browsers reconnect to the
    // next worker. A request being answered finishes first.
    for (Connection* c = connections_; c != nullptr;) {
        Connection* next = c->next;
        if (c->live || (c->query == nullptr && c->sent == c->out.size())) close(*c);
        c = next;
    }
}

void WorkerState::set_poll(Connection& c, int events) {
    if (events == c.poll_events) return;
    c.poll_events = events;
    if (events == 0)
        uv_poll_stop(&c.poll);
    else
        uv_poll_start(&c.poll, events | UV_DISCONNECT, on_poll);
}

void WorkerState::on_poll(uv_poll_t* handle, int status, int events) {
    auto& c = *static_cast<Connection*>(handle->data);
    WorkerState& self = *c.worker;
    if (status < 0) return self.close(c);
    if (events & UV_WRITABLE) self.write_out(c);
    if (!c.closing && (events & (UV_READABLE | UV_DISCONNECT))) self.on_readable(c);
}

void WorkerState::on_readable(Connection& c) {
    char buffer[8192];
    for (;;) {
        const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
        if (n > 0) {
            c.active_ms = now_ms();
            if (c.metrics_phase == SMP_PHASE_IDLE) set_phase(c, SMP_PHASE_READING);
            // A live client has nothing more to say; what it sends is dropped.
            if (!c.live) c.in.append(buffer, static_cast<size_t>(n));
            if (c.in.size() > kMaxHead) {
                c.in.clear();
                return respond_error(c, 431);
            }
            continue;
        }
        if (n == 0) return close(c);  // the client closed: nothing more can be asked
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return close(c);
    }
    serve(c);
}

// One request at a time: the next one is read once this one's answer is
// written (pipelined requests wait in `in`).
void WorkerState::serve(Connection& c) {
    if (c.closing || c.live || c.query != nullptr || c.sent < c.out.size()) return;
    const size_t skip = smp::http::leading_empty_lines(c.in);
    if (skip > 0) c.in.erase(0, skip);
    const size_t end = smp::http::head_end(c.in);
    if (end == 0) {
        if (c.in.size() >= kMaxHead) respond_error(c, smp::http::oversized_head_status(c.in));
        return;
    }
    const std::string block = c.in.substr(0, end);
    c.in.erase(0, end);
    c.head.clear_head();
    http_parser_init(&c.parser, HTTP_REQUEST);
    c.parser.data = &c.head;
    if (const int refused = smp::http::parse_request_head(block, c.parser, c.head); refused != 0) {
        c.close_after = true;
        return respond_error(c, refused);
    }
    const unsigned minor = c.parser.http_minor;
    if (!smp::http::host_fields_valid(minor, c.head.count(smp::http::Field::host),
                                      c.head.field(smp::http::Field::host))) {
        c.close_after = true;
        return respond_error(c, 400);
    }
    // A body is not read: a request with one ends the connection after the answer.
    if (c.parser.content_length > 0 && c.parser.content_length != ULLONG_MAX) c.close_after = true;
    if (!smp::http::keeps_alive(minor, c.head.connection_options())) c.close_after = true;
    ++c.requests;
    set_phase(c, SMP_PHASE_WRITING);  // read: from here it is being answered
    answer(c, http_method_str(static_cast<http_method>(c.parser.method)), c.head.target_view, minor);
}

void WorkerState::answer(Connection& c, std::string_view method, std::string_view target, unsigned /*http_minor*/) {
    const size_t question = target.find('?');
    const std::string_view path = target.substr(0, question);
    const std::string_view query =
        question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
    c.head_only = method == "HEAD";
    if (!c.allowed) return respond_error(c, 403);
    if (method != "GET" && method != "HEAD") return respond_error(c, 405, "Allow: GET, HEAD\r\n");
    // The page's own files hold no data: served without the token, which
    // the browser only has in the page's address (?access_token=), not
    // when it fetches the script and style beside it.
    const std::string_view file = path == "/" ? std::string_view("/index.html") : path;
    for (size_t i = 0; i < kPageFileCount; ++i)
        if (file == kPageFiles[i].path)
            return respond(c, 200, kPageFiles[i].content_type,
                           std::string_view(reinterpret_cast<const char*>(kPageFiles[i].data), kPageFiles[i].size));
    if (!settings_.token.empty()) {
        // RFC 6750: a Bearer token in Authorization, or (§2.3) as
        // access_token in the query, which is how a page's EventSource,
        // which cannot set a header, sends it.
        std::string_view given;
        const std::string_view authorization = c.head.field(smp::http::Field::authorization);
        std::optional<std::string> from_query;
        if (authorization.size() > 7 && smp::http::same_name(authorization.substr(0, 7), "Bearer "))
            given = smp::http::trim(authorization.substr(7));
        else if ((from_query = smp::http::query_parameter(query, "access_token")))
            given = *from_query;
        if (given.empty() || !smp::http::same_secret(given, settings_.token)) return respond_error(c, 403);
    }
    if (path == "/metrics") {
        const std::string text = metrics_text();
        return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    }
    if (path == "/api/v1/live") return start_live(c);
    if (path.starts_with("/api/v1/")) {
        const std::string_view report = path.substr(8);
        if (!smp_report::make_table(report)) return respond_error(c, 404);  // a report no store has
        return ask_report(c, report, query);
    }
    respond_error(c, 404);
}

// /api/v1/<report>?since=&until=&file=&bucket=&include_bots=1: as
// `smprotocol stats --json <report>` prints it, with the same time rule.
void WorkerState::ask_report(Connection& c, std::string_view report, std::string_view query) {
    const int64_t now_us = smp::protocol::wall_clock_us();
    smp_query q{};
    q.size = sizeof q;
    const std::string name(report);
    q.report = name.c_str();
    std::optional<std::string> since = smp::http::query_parameter(query, "since");
    std::optional<std::string> until = smp::http::query_parameter(query, "until");
    std::optional<std::string> file = smp::http::query_parameter(query, "file");
    std::optional<std::string> bucket = smp::http::query_parameter(query, "bucket");
    for (const auto& [text, field] : {std::pair{&since, &q.since_us}, std::pair{&until, &q.until_us}}) {
        if (!text->has_value() || (*text)->empty()) continue;
        const auto at = smp_report::parse_time(**text, now_us);
        if (!at) {
            const std::string body = "{\"error\": \"not a time: use 2026-11-24, 2026-11-24T10:30:00 or 2h\"}\n";
            return respond(c, 400, "application/json", body);
        }
        *field = *at;
    }
    std::string path = file.value_or("");
    while (path.starts_with('/')) path.erase(0, 1);  // stored relative to the root
    q.path = path.empty() ? nullptr : path.c_str();
    q.bucket = bucket && !bucket->empty() ? bucket->c_str() : nullptr;
    // As --include-bots: 1 (or true) counts the bots too.
    const std::optional<std::string> bots = smp::http::query_parameter(query, "include_bots");
    q.include_bots = bots && (*bots == "1" || *bots == "true") ? 1 : 0;
    // What every store checks first (the report's name, its bucket), checked
    // here: a wrong question is the client's 400, an answer that fails the
    // store's 502.
    char wrong[160];
    if (!smp_report::make_table(q, wrong, sizeof wrong)) {
        std::string body = "{\"error\": ";
        smp_report::append_json_string(body, wrong);
        body += "}\n";
        return respond(c, 400, "application/json", body);
    }

    // Kept by what decides the answer: a time ago moves with the clock, so
    // the key is the query as written, and the cache lasts a second.
    c.query_key = name + '?' + std::string(query);
    const uint64_t now = now_ms();
    if (auto cached = cache_.find(c.query_key); cached != cache_.end() && fresh(cached->second, now))
        return respond(c, 200, "application/json", cached->second.json);
    set_poll(c, UV_DISCONNECT);  // reads nothing until answered
    c.query_asked_ms = now;
    const int asked = core_->query_async(worker_, &q, on_report, &c, &c.query);
    if (asked != SMP_PENDING) {
        c.query = nullptr;
        const std::string body = "{\"error\": \"no store in this configuration answers reports\"}\n";
        respond(c, 503, "application/json", body);
    }
}

void WorkerState::on_report(void* data, const smp_table* table, const char* error) {
    auto& c = *static_cast<Connection*>(data);
    WorkerState& self = *c.worker;
    c.query = nullptr;
    if (table == nullptr) {
        std::string body = "{\"error\": ";
        smp_report::append_json_string(body, error);
        body += "}\n";
        // The question was checked before it was asked: the store failed.
        return self.respond(c, 502, "application/json", body);
    }
    const std::string report = c.query_key.substr(0, c.query_key.find('?'));
    // A copy: keeping an answer may drop others, and the connection's own
    // answer is written after.
    const std::string json = self.keep(c.query_key, report.c_str(), *table, c.query_asked_ms);
    self.respond(c, 200, "application/json", json);
}

const std::string& WorkerState::keep(const std::string& key, const char* report, const smp_table& table,
                                     uint64_t asked_ms) {
    const uint64_t now = now_ms();
    // Old answers are dropped as new ones come: the cache holds what was
    // asked within its lifetime, not every query ever asked.
    std::erase_if(cache_,
                  [&](const auto& entry) { return now - entry.second.at_ms > 60'000 && !fresh(entry.second, now); });
    Cached& cached = cache_[key];
    cached.at_ms = now;
    cached.took_ms = now - asked_ms;
    cached.json = smp_report::table_json(report, table);
    cached.first_row = "null";
    if (table.row_count > 0) {
        cached.first_row.clear();
        smp_report::append_row_json(cached.first_row, table, 0);
    }
    return cached.json;
}

void WorkerState::respond(Connection& c, int status, std::string_view content_type, std::string_view body,
                          std::string_view extra_fields) {
    std::string& out = c.out;
    if (c.sent == out.size()) {
        out.clear();
        c.sent = 0;
    }
    smp::protocol::append_status_line(out, status, dates_.now());
    out += "Content-Type: ";
    out += content_type;
    out += "\r\nContent-Length: ";
    smp::protocol::append_number(out, body.size());
    out += "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
    out += extra_fields;
    if (smp::protocol::status_closes_connection(status)) c.close_after = true;
    smp::protocol::end_head(out, c.close_after || stopping_, c.parser.http_minor);
    if (stopping_) c.close_after = true;
    if (!c.head_only) out += body;
    set_phase(c, SMP_PHASE_WRITING);
    write_out(c);
}

void WorkerState::respond_error(Connection& c, int status, std::string_view extra_fields) {
    std::string body;
    smp::protocol::append_error_body(body, status);
    respond(c, status, "text/plain; charset=utf-8", body, extra_fields);
}

// Server-Sent Events (HTML Living Standard §9.2): an `update` event each
// interval, with the summary, the downloads in progress and a few counters.
void WorkerState::start_live(Connection& c) {
    std::string& out = c.out;
    out.clear();
    c.sent = 0;
    smp::protocol::append_status_line(out, 200, dates_.now());
    out += "Content-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
    // No length: the stream ends when the connection does.
    out += "Connection: close\r\n\r\nretry: 2000\n\n";
    c.live = true;
    c.close_after = true;
    set_phase(c, SMP_PHASE_WRITING);
    live_.push_back(&c);
    write_out(c);
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&live_timer_))) {
        uv_timer_start(&live_timer_, on_live_tick, 0, settings_.live_interval_ms);
    }
}

// The stream costs the store nothing: the downloads in progress are the
// collector's live table (answered by the core from shared memory), the
// counters are the metrics, and the summary is the last one this worker
// asked for a page (none: null). A summary of a large store takes a second;
// asked every second for every open page, it would cost a core.
void WorkerState::on_live_tick(uv_timer_t* timer) {
    auto& self = *static_cast<WorkerState*>(timer->data);
    if (self.live_.empty()) {
        uv_timer_stop(timer);
        return;
    }
    if (self.live_query_ != nullptr) return;  // the last tick's is still out
    smp_query q{};
    q.size = sizeof q;
    q.report = "in_progress";
    if (self.core_->query_async(self.worker_, &q, on_live_report, &self, &self.live_query_) != SMP_PENDING) {
        self.live_query_ = nullptr;
        self.live_rows_ = "[]";
        self.send_live_update();
    }
}

void WorkerState::on_live_report(void* data, const smp_table* table, const char* /*error*/) {
    auto& self = *static_cast<WorkerState*>(data);
    self.live_query_ = nullptr;
    self.live_rows_ = table != nullptr ? one_line(smp_report::rows_json(*table)) : "[]";
    self.send_live_update();
}

// The core's Prometheus text, whatever its length (snprintf-style calls).
std::string WorkerState::metrics_text() const {
    std::string text(64 * 1024, '\0');
    size_t length = core_->metrics_text(worker_, text.data(), text.size());
    if (length >= text.size()) {
        text.resize(length + 1);
        length = core_->metrics_text(worker_, text.data(), text.size());
    }
    text.resize(std::min(length, text.size()));
    return text;
}

void WorkerState::send_live_update() {
    std::string event = "event: update\ndata: {\"time\": ";
    smp::protocol::append_number(event, static_cast<uint64_t>(smp::protocol::wall_clock_us() / 1'000'000));
    // The summary is one row: the object itself, or null when none.
    const auto summary = cache_.find("summary?");
    event += ", \"summary\": ";
    event += summary != cache_.end() ? summary->second.first_row : std::string("null");
    event += ", \"in_progress\": ";
    event += live_rows_;
    smp_counters counters{};
    counters.size = sizeof counters;
    core_->counters(worker_, &counters);
    event += ", \"metrics\": {\"bytes_sent_total\": ";
    smp::protocol::append_number(event, counters.sent_bytes);
    event += ", \"requests_total\": ";
    smp::protocol::append_number(event, counters.requests);
    event += ", \"connections_open\": ";
    smp::protocol::append_number(event, static_cast<uint64_t>(std::max<int64_t>(counters.connections_open, 0)));
    event += ", \"downloads_in_progress\": ";
    smp::protocol::append_number(event, static_cast<uint64_t>(std::max<int64_t>(counters.downloads_in_progress, 0)));
    event += "}}\n\n";
    ++updates_;
    // Each write may close a connection, which leaves live_: walk a copy.
    const std::vector<Connection*> live = live_;
    for (Connection* c : live) {
        if (c->out.size() - c->sent > kMaxLiveBacklog) {
            close(*c);
            continue;
        }
        c->out += event;
        write_out(*c);
    }
}

void WorkerState::write_out(Connection& c) {
    while (c.sent < c.out.size()) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += static_cast<size_t>(n);
            c.active_ms = now_ms();
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_poll(c, UV_WRITABLE | (c.live ? UV_READABLE : 0));
            return;
        }
        return close(c);
    }
    c.out.clear();
    c.sent = 0;
    if (c.live) {
        set_poll(c, UV_READABLE);  // to see the client leave
        return;
    }
    if (c.close_after) {
        shut_write(c);
        return close(c);
    }
    set_poll(c, UV_READABLE);
    set_phase(c, c.in.empty() ? SMP_PHASE_IDLE : SMP_PHASE_READING);
    serve(c);  // a pipelined request may be waiting
}

void WorkerState::close(Connection& c) {
    if (c.closing) return;
    c.closing = true;
    if (c.query != nullptr) {
        core_->query_cancel(worker_, c.query);
        c.query = nullptr;
    }
    if (c.live) std::erase(live_, &c);
    release_and_close(c, SMP_END_COMPLETED, kModule);
}

void WorkerState::on_sweep(uv_timer_t* timer) {
    auto& self = of<WorkerState>(timer);
    const uint64_t now = now_ms();
    for (Connection* c = self.connections_; c != nullptr;) {
        Connection* next = c->next;
        const bool waiting = c->query != nullptr || c->live;
        if (!waiting && now - c->active_ms > self.settings_.keepalive_timeout_ms) self.close(*c);
        c = next;
    }
}

}  // namespace smp::dashboard
