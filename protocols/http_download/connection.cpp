#include "connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string>

#include "http_status.hpp"
#include "https_redirect.hpp"
#include "path.hpp"
#include "request_head.hpp"
#include "secure_link.hpp"

namespace smp::http {
namespace {

using smp::protocol::append_number;
using smp::protocol::wall_clock_us;

constexpr size_t kMaxIovecs = 16;

const char* c_string(std::string_view view) { return view.data() != nullptr ? view.data() : nullptr; }

// RFC 9112 §6.3: a request has a body when it says a length or is chunked.
// This module reads none.
bool has_body(const http_parser& p) {
    return (p.content_length > 0 && p.content_length != ULLONG_MAX) || (p.flags & F_CHUNKED);
}

}  // namespace

// What the thread pool reads and renders for one listing request, and the
// connection waiting for it: null once that connection has closed, and the
// job then only frees itself when the pool is done.
struct ListingJob {
    uv_work_t work{};
    Connection* connection = nullptr;
    // Read on the pool: copies, not views of the exchange.
    int root_fd = -1;
    std::string directory;  // relative, "" or ending in '/'
    size_t max_entries = 0;
    Autoindex format = Autoindex::html;
    // Written on the pool, read on the loop after it.
    OpenResult result = OpenResult::error;
    bool truncated = false;
    std::string body;
};

void Exchange::reset() {
    // The head's fields keep their room: the steady state allocates nothing.
    std::vector<HeaderField> kept = std::move(fields);
    kept.clear();
    static_cast<RequestHead&>(*this) = {};
    fields = std::move(kept);
    request_parsed = false;
    has_forwarded_client = false;
    header_length = 0;
    path.clear();
    out.clear();
    segments.clear();
    segment = 0;
    segment_sent = 0;
    intervals.clear();
    file = nullptr;
    // A pooled exchange keeps a small body's room, not a large one's.
    if (body.capacity() > kKeptBodyCapacity) std::string().swap(body);
    body.clear();
    if (out.capacity() > kKeptBodyCapacity) std::string().swap(out);  // after a large listing
    body_in_memory = false;
    status = 0;
    close_after = false;
    header_bytes = 0;
    body_bytes = 0;
    header_total = 0;
    start_us = 0;
    last_progress_report_ms = 0;
    download_slot = {};
    cache_key.clear();
    cache_call = nullptr;
    rate_start_ms = 0;
    rate_key = 0;
    granted = 0;
    query = {};
    listing = nullptr;
}

void Exchange::detach_listing() {
    if (listing == nullptr) return;
    listing->connection = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(&listing->work));  // fails harmlessly once running
    listing = nullptr;
}

// ---- reading ----------------------------------------------------------------

void WorkerState::on_handshake(Connection& c) {
    switch (c.tls->handshake()) {
        case smp::tls::Stream::Step::again: return set_poll(c, c.tls->poll_events());
        case smp::tls::Stream::Step::failed:
            // Garbage, a client that gave up, no protocol in common: nothing
            // was asked, so no request is recorded; the log tells.
            handshake_failures_.note(c.tls->failure(), c.logged_ip, c.tls->failure_detail(), core_, "http_download",
                                     uv_now(loop_));
            return close_connection(c, SMP_END_BAD_REQUEST);
        case smp::tls::Stream::Step::done: break;
    }
    c.state = ConnectionState::reading;
    c.deadline_ms = uv_now(loop_) + settings_.header_timeout_ms;
    set_poll(c, UV_READABLE);
    // The first request may have come with the handshake's last bytes.
    if (c.tls->has_buffered_input()) on_readable(c);
}

ssize_t WorkerState::receive(Connection& c, char* into, size_t size) {
    return smp::tls::receive(c.tls.get(), c.fd, into, size);
}

void WorkerState::on_readable(Connection& c) {
    if (c.state == ConnectionState::lingering) {
        // Discard what the client still sends, so that closing does not reset
        // the connection before it has read our last response.
        std::array<char, 4096> discard;
        for (;;) {
            const ssize_t n = receive(c, discard.data(), discard.size());
            if (n > 0) continue;
            if (n < 0 && errno == EAGAIN) return;
            return close_connection(c, SMP_END_COMPLETED);
        }
    }
    if (c.in == nullptr) c.in = take_buffer();
    const size_t capacity = settings_.max_header_size;
    if (c.in_length == capacity) return process_input(c);  // full: the buffer is answered first
    const ssize_t n = receive(c, c.in + c.in_length, capacity - c.in_length);
    if (n > 0) {
        if (c.in_length == 0) {
            c.request_start_us = wall_clock_us();
            set_phase(c, SMP_PHASE_READING);
            c.deadline_ms = uv_now(loop_) + settings_.header_timeout_ms;
        }
        c.in_length += static_cast<size_t>(n);
        return process_input(c);
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    // End of stream or an error before a whole request arrived.
    if (c.in_length > 0) report(c, nullptr, n == 0 ? SMP_END_CLIENT_CLOSED : SMP_END_READ_ERROR, true);
    close_connection(c, n == 0 ? SMP_END_CLIENT_CLOSED : SMP_END_READ_ERROR);
}

void WorkerState::process_input(Connection& c) {
    const size_t end = head_end({c.in, c.in_length});
    if (end > 0) return start_exchange(c, end);
    if (c.in_length < settings_.max_header_size) {
        set_poll(c, UV_READABLE);
        return;
    }
    // The buffer is full and holds no whole header block.
    start_exchange(c, 0);
    respond_error(c, oversized_head_status({c.in, c.in_length}));
}

void WorkerState::start_exchange(Connection& c, size_t header_length) {
    c.exchange = take_exchange();
    Exchange& e = *c.exchange;
    e.start_us = c.request_start_us ? c.request_start_us : wall_clock_us();
    e.header_length = header_length;
    e.last_progress_report_ms = uv_now(loop_);
    ++c.requests;
    c.state = ConnectionState::writing;
    set_phase(c, SMP_PHASE_WRITING);
    c.deadline_ms = uv_now(loop_) + settings_.send_timeout_ms;
    if (header_length == 0) return;  // the caller answers an oversized request

    const int head_status = read_request_head(c.in, header_length, e);
    if (head_status != 0) return respond_error(c, head_status);
    find_forwarded_client(c);
    e.request_parsed = true;
    respond(c);
}

// ---- answering --------------------------------------------------------------

void WorkerState::find_forwarded_client(Connection& c) {
    Exchange& e = *c.exchange;
    // Only a trusted proxy's word is taken.
    if ((e.forwarded.empty() && e.x_forwarded_for.empty()) || !trusted_proxy(c.client_ip)) return;
    e.has_forwarded_client = forwarded_client(
        e.forwarded, e.x_forwarded_for, [this](const char* ip) { return trusted_proxy(ip); }, e.forwarded_client);
}

void WorkerState::respond(Connection& c) {
    Exchange& e = *c.exchange;
    const http_parser& p = e.parser;
    // A body we do not read would be taken for the next request: close after.
    e.close_after = !keeps_alive(p.http_minor, e.connection_options()) || has_body(p) || stopping_;
    if (!host_fields_valid(p.http_minor, e.count(Field::host), e.field(Field::host))) return respond_error(c, 400);
    if (c.over_limit) {
        e.close_after = true;
        return respond_error(c, 429);
    }
    if (settings_.redirect_https) return respond_redirect(c);
    if (p.method != HTTP_GET && p.method != HTTP_HEAD) return respond_error(c, 405);

    http_parser_url url;
    http_parser_url_init(&url);
    if (http_parser_parse_url(e.target.data(), e.target.size(), 0, &url) != 0) return respond_error(c, 400);
    std::string_view path = "/";
    if (url.field_set & (1 << UF_PATH))
        path = e.target.substr(url.field_data[UF_PATH].off, url.field_data[UF_PATH].len);
    if (normalize_path(path, e.path) != PathError::none) return respond_error(c, 400);
    if (url.field_set & (1 << UF_QUERY))
        e.query = e.target.substr(url.field_data[UF_QUERY].off, url.field_data[UF_QUERY].len);
    if (!settings_.link_secrets.empty()) {
        // The query names the link, not the file: the segments and resumes
        // of one download carry the same link and still merge.
        const char* client = e.has_forwarded_client ? e.forwarded_client.data() : c.client_ip;
        switch (check_link(settings_.link_secrets, "/" + e.path, e.query, settings_.link_bind_ip ? client : "",
                           wall_clock_us() / 1'000'000)) {
            case LinkCheck::valid: break;
            case LinkCheck::expired: return respond_error(c, 410);
            case LinkCheck::unsigned_link:
            case LinkCheck::bad_signature: return respond_error(c, 403);
        }
    }

    switch (files_.acquire(e.path, uv_now(loop_), e.file)) {
        case OpenResult::ok: return respond_file(c);
        case OpenResult::not_found: return respond_error(c, 404);
        case OpenResult::forbidden: return respond_error(c, 403);
        case OpenResult::is_directory: return respond_directory(c);
        case OpenResult::error: return respond_error(c, 500);
    }
}

// index.html is served whenever a directory has one, as nginx's index does:
// it is a file of the tree, served by its own name too. Without one, the
// listing when autoindex is on, else 403 as always. The redirect to the
// trailing slash comes only when one of those would answer, so that a
// directory with neither gets the same 403 with or without its slash.
void WorkerState::respond_directory(Connection& c) {
    Exchange& e = *c.exchange;
    const bool has_slash = e.path.empty() || e.path.back() == '/';
    std::string index_path = e.path;
    if (!has_slash) index_path += '/';
    index_path += "index.html";
    OpenFile* index = nullptr;
    const OpenResult index_found = files_.acquire(index_path, uv_now(loop_), index);
    if (index_found == OpenResult::error) return respond_error(c, 500);
    const bool has_index = index_found == OpenResult::ok;
    if (!has_index && settings_.autoindex == Autoindex::off) return respond_error(c, 403);
    if (!has_slash) {
        if (has_index) files_.release(index);
        return respond_moved_to_directory(c);
    }
    if (!has_index) return start_listing(c);
    // Recorded as the file it is: a request for it may be a download.
    e.path = std::move(index_path);
    e.file = index;
    respond_file(c);
}

// RFC 9110 §15.4.2: the directory's URL is the one with the slash, so that
// the relative links of its page resolve inside it. The Location is the
// normalised path, percent-encoded, and the query as it came.
void WorkerState::respond_moved_to_directory(Connection& c) {
    Exchange& e = *c.exchange;
    e.status = 301;
    smp::protocol::append_status_line(e.out, 301, dates_.now());
    e.out += "Location: /";
    append_percent_encoded(e.out, e.path, true);
    e.out += '/';
    if (!e.query.empty()) {
        e.out += '?';
        e.out += e.query;
    }
    e.out += "\r\nContent-Length: 0\r\n";
    end_header(c, e.out);
    e.header_total = e.out.size();
    e.segments.push_back({false, 0, e.header_total});
    send_response(c);
}

void WorkerState::start_listing(Connection& c) {
    Exchange& e = *c.exchange;
    auto job = std::make_unique<ListingJob>();
    job->work.data = job.get();
    job->connection = &c;
    job->root_fd = settings_.root_fd;
    job->directory = e.path;
    job->max_entries = settings_.autoindex_max_entries;
    job->format = settings_.autoindex;
    const auto read_on_pool = [](uv_work_t* work) {
        // No exception leaves a pool thread: out of memory is a 500.
        auto& job = *static_cast<ListingJob*>(work->data);
        try {
            Listing listing;
            job.result = read_listing(job.root_fd, job.directory, job.max_entries, listing);
            if (job.result != OpenResult::ok) return;
            sort_listing(listing.entries);
            job.truncated = listing.truncated;
            if (job.format == Autoindex::json)
                render_json(listing, job.body);
            else
                render_html("/" + job.directory, listing, job.body);
        } catch (...) {
            job.result = OpenResult::error;
            job.body.clear();
        }
    };
    if (uv_queue_work(loop_, &job->work, read_on_pool, on_listing_read) != 0) return respond_error(c, 500);
    e.listing = job.release();
    set_poll(c, 0);  // parked: nothing is read or written until the listing is ready
}

void WorkerState::on_listing_read(uv_work_t* work, int /*status: UV_ECANCELED once orphaned*/) {
    std::unique_ptr<ListingJob> job(static_cast<ListingJob*>(work->data));
    if (job->connection == nullptr) return;  // the connection closed meanwhile
    Connection& c = *job->connection;
    c.exchange->listing = nullptr;
    c.worker->send_listing(c, *job);
}

// Recorded with the listing's bytes and no file (file_size -1, no ETag):
// a request, never part of a download.
void WorkerState::send_listing(Connection& c, ListingJob& job) {
    Exchange& e = *c.exchange;
    switch (job.result) {
        case OpenResult::ok: break;
        case OpenResult::not_found: return respond_error(c, 404);  // gone since it was opened
        case OpenResult::forbidden: return respond_error(c, 403);
        case OpenResult::is_directory:
        case OpenResult::error: return respond_error(c, 500);
    }
    // The body first, into `out`; the head goes after it and is sent first.
    e.out.swap(job.body);
    const size_t body_length = e.out.size();
    e.status = 200;
    smp::protocol::append_status_line(e.out, 200, dates_.now());
    e.out +=
        job.format == Autoindex::json ? "Content-Type: application/json" : "Content-Type: text/html; charset=utf-8";
    e.out += "\r\nContent-Length: ";
    append_number(e.out, body_length);
    e.out += "\r\nCache-Control: no-cache\r\n";
    if (job.truncated) e.out += "X-Autoindex-Truncated: true\r\n";
    end_header(c, e.out);
    e.header_total = e.out.size() - body_length;
    e.segments.push_back({false, body_length, e.header_total});
    if (e.parser.method != HTTP_HEAD) e.segments.push_back({false, 0, body_length});
    send_response(c);
}

void WorkerState::end_header(const Connection& c, std::string& out) const {
    // RFC 6797 §7.2: never over plain HTTP, where a man in the middle could set it.
    if (c.tls && !settings_.hsts.empty()) {
        out += "Strict-Transport-Security: ";
        out += settings_.hsts;
        out += "\r\n";
    }
    smp::protocol::end_head(out, c.exchange->close_after, c.exchange->parser.http_minor);
}

// redirect_https: the same URL over HTTPS. Nothing else of the request is
// looked at: no file is opened and no limit is taken.
void WorkerState::respond_redirect(Connection& c) {
    Exchange& e = *c.exchange;
    e.status = 308;
    smp::protocol::append_status_line(e.out, 308, dates_.now());
    e.out += "Location: ";
    append_https_location(e.out, e.field(Field::host), c.local_ip, settings_.https_port, e.target);
    e.out += "\r\nContent-Length: 0\r\n";
    end_header(c, e.out);
    e.header_total = e.out.size();
    e.segments.push_back({false, 0, e.header_total});
    send_response(c);
}

void WorkerState::respond_error(Connection& c, int status) {
    Exchange& e = *c.exchange;
    e.status = status;
    if (smp::protocol::status_closes_connection(status)) e.close_after = true;
    if (e.file != nullptr && status != 416) {
        files_.release(e.file);
        e.file = nullptr;
    }
    const bool head = e.parser.method == HTTP_HEAD;
    std::string& out = e.out;
    const size_t body_offset = out.size();
    smp::protocol::append_error_body(out, status);
    const size_t body_length = out.size() - body_offset;
    const size_t header_offset = out.size();
    smp::protocol::append_error_head(out, status, dates_.now());
    if (status == 405) out += "Allow: GET, HEAD\r\n";
    if (status == 416) {
        out += "Content-Range: bytes */";
        append_number(out, e.file->size);
        out += "\r\n";
    }
    end_header(c, out);
    e.header_total = out.size() - header_offset;
    e.segments.push_back({false, header_offset, e.header_total});
    if (!head) e.segments.push_back({false, body_offset, body_length});
    send_response(c);
}

void WorkerState::respond_file(Connection& c) {
    Exchange& e = *c.exchange;
    const OpenFile& file = *e.file;
    const bool head = e.parser.method == HTTP_HEAD;

    switch (evaluate_preconditions(e.conditions, file.etag, file.mtime_s)) {
        case Precondition::failed: return respond_error(c, 412);
        case Precondition::not_modified: {
            e.status = 304;
            smp::protocol::append_status_line(e.out, 304, dates_.now());
            e.out += "ETag: ";
            e.out += file.etag;
            e.out += "\r\nLast-Modified: ";
            e.out.append(file.last_modified, kHttpDateLength);
            e.out += "\r\n";
            end_header(c, e.out);
            e.header_total = e.out.size();
            e.segments.push_back({false, 0, e.header_total});
            return send_response(c);
        }
        case Precondition::proceed: break;
    }

    // Range applies to GET only (RFC 9110 §14.2); If-Range decides whether it
    // applies to this representation; a repeated Range field is invalid.
    RangeRequest& ranges = e.range_request;
    ranges.outcome = RangeOutcome::ignore;
    if (!head && !e.range.empty() && !e.range_repeated &&
        if_range_allows(e.conditions.if_range, file.etag, file.mtime_s))
        parse_range(e.range, file.size, settings_.max_ranges, ranges);
    if (ranges.outcome == RangeOutcome::unsatisfiable) return respond_error(c, 416);

    if (settings_.limit_rate_per_download > 0 && !head) {
        // The logical download: client (forwarded behind a trusted proxy), user agent, file.
        const std::string_view client = e.has_forwarded_client ? e.forwarded_client.data() : c.client_ip;
        e.rate_key = limit_key("rate", std::string(client) + '\0' + std::string(e.user_agent), e.path);
    }
    // unique_ip: one download of this file by this client at a time (the
    // client behind a trusted proxy). A HEAD transfers nothing and is let be.
    if (settings_.unique_ip && !head) {
        const uint64_t key =
            limit_key("download", e.has_forwarded_client ? e.forwarded_client.data() : c.client_ip, e.path);
        switch (slots_->acquire(e.download_slot, key, 1, on_download_slot, &c)) {
            case SlotAnswer::refused: return respond_error(c, 429);
            case SlotAnswer::waiting: return;  // parked: on_download_slot goes on
            case SlotAnswer::taken: break;
        }
    }
    fetch_body(c);
}

void WorkerState::on_download_slot(void* data, int answer) {
    Connection& c = *static_cast<Connection*>(data);
    WorkerState& self = *c.worker;
    if (self.slots_->answered(c.exchange->download_slot, answer) == SlotAnswer::refused)
        return self.respond_error(c, 429);
    self.fetch_body(c);
}

void WorkerState::fetch_body(Connection& c) {
    Exchange& e = *c.exchange;
    if (e.parser.method != HTTP_HEAD && e.file->size > 0 && ask_shared_cache(c)) return;  // parked: on_shared_cache
    send_file_head(c);
}

// Small files come from the cache the servers share (memcache), filled from
// the file on a miss; the body is then sent from memory. The key names the
// file's size and mtime, so a changed file is read again. True when the
// cache answers later (on_shared_cache).
bool WorkerState::ask_shared_cache(Connection& c) {
    Exchange& e = *c.exchange;
    const OpenFile& file = *e.file;
    if (!SMP_HAS(core_, cache_set)) return false;  // ABI 1.4
    if (file.size > core_->cache_max_size(worker_)) return false;
    e.cache_key = shared_cache_key(file.key, file.etag);
    e.body.resize(file.size);
    // cache_get_async is ABI 1.8; an older core answers at once. On a hit
    // the plugin writes the body straight into e.body.
    const int answer = SMP_HAS(core_, cache_get_async)
                           ? core_->cache_get_async(worker_, e.cache_key.c_str(), e.body.data(), file.size,
                                                    on_shared_cache, &c, &e.cache_call)
                           : core_->cache_get(worker_, e.cache_key.c_str(), e.body.data(), file.size);
    if (answer == SMP_PENDING) return true;
    use_cache_answer(e, answer);
    return false;
}

void WorkerState::on_shared_cache(void* data, int answer) {
    Connection& c = *static_cast<Connection*>(data);
    WorkerState& self = *c.worker;
    c.exchange->cache_call = nullptr;
    self.use_cache_answer(*c.exchange, answer);
    self.send_file_head(c);
}

void WorkerState::use_cache_answer(Exchange& e, int answer) {
    const OpenFile& file = *e.file;
    if (answer < 0) return;  // the cache cannot answer: the file is sent
    if (answer == 0) {
        for (uint64_t done = 0; done < file.size;) {
            const ssize_t n = pread(file.fd, e.body.data() + done, file.size - done, static_cast<off_t>(done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;  // changed under us: sendfile will say so
            done += static_cast<uint64_t>(n);
        }
        core_->cache_set(worker_, e.cache_key.c_str(), e.body.data(), file.size);
    }
    e.body_in_memory = true;
}

void WorkerState::send_file_head(Connection& c) {
    Exchange& e = *c.exchange;
    const OpenFile& file = *e.file;
    const RangeRequest& ranges = e.range_request;
    std::string& out = e.out;
    const bool multipart = ranges.outcome == RangeOutcome::partial && ranges.ranges.size() > 1;
    char boundary[24] = {};
    uint64_t content_length = file.size;
    if (multipart) {
        // Framing first, into `out`; the header goes after it and is sent first.
        std::snprintf(boundary, sizeof boundary, "%08x%012llx", worker_id_,
                      static_cast<unsigned long long>(++boundary_counter_));
        content_length = append_multipart(ranges.ranges, file.size, file.content_type, boundary, out, e.segments);
    } else if (ranges.outcome == RangeOutcome::partial) {
        content_length = ranges.ranges[0].length();
        e.segments.push_back({true, ranges.ranges[0].first, content_length});
    } else if (file.size > 0) {
        e.segments.push_back({true, 0, file.size});
    }
    if (e.parser.method == HTTP_HEAD) e.segments.clear();

    e.rate_start_ms = uv_now(loop_);
    e.status = ranges.outcome == RangeOutcome::partial ? 206 : 200;
    const size_t header_offset = out.size();
    smp::protocol::append_status_line(out, e.status, dates_.now());
    out += "Content-Type: ";
    if (multipart) {
        out += "multipart/byteranges; boundary=";
        out += boundary;
    } else {
        out += file.content_type;
    }
    out += "\r\nContent-Length: ";
    append_number(out, content_length);
    out += "\r\nLast-Modified: ";
    out.append(file.last_modified, kHttpDateLength);
    out += "\r\nETag: ";
    out += file.etag;
    out += "\r\nAccept-Ranges: bytes\r\n";
    if (e.status == 206 && !multipart) {
        out += "Content-Range: ";
        append_content_range(out, ranges.ranges[0], file.size);
        out += "\r\n";
    }
    end_header(c, out);
    e.header_total = out.size() - header_offset;
    e.segments.insert(e.segments.begin(), Segment{false, header_offset, e.header_total});
    send_response(c);
}

// ---- sending ----------------------------------------------------------------

void WorkerState::on_writable(Connection& c) { send_response(c); }

uint64_t WorkerState::rate_budget(Exchange& e, uint64_t& wait_ms) {
    uint64_t budget = settings_.block_size;
    wait_ms = 0;
    const uint64_t now = uv_now(loop_);
    if (settings_.limit_rate > 0) {
        // Counted from the start of the response, on the file bytes sent.
        const RateAllowance allowance =
            rate_allowance(settings_.limit_rate, settings_.limit_rate_after, e.rate_start_ms, e.body_bytes, now);
        if (allowance.bytes == 0) {
            wait_ms = allowance.wait_ms;
            return 0;
        }
        budget = std::min(budget, allowance.bytes);
    }
    if (e.rate_key != 0) {
        if (e.granted == 0) {
            int64_t wait_us = 0;
            e.granted = settings_.buckets->grant(e.rate_key, budget, settings_.limit_rate_per_download, wall_clock_us(),
                                                 wait_us);
            if (e.granted == 0) {
                wait_ms = static_cast<uint64_t>(std::max<int64_t>(wait_us, 0)) / 1000 + 1;
                return 0;
            }
        }
        budget = std::min(budget, e.granted);
    }
    return budget;
}

void WorkerState::pause(Connection& c, uint64_t wait_ms) {
    set_poll(c, 0);
    park(c, uv_now(loop_) + wait_ms, on_pace);
    c.deadline_ms = c.resume_ms + settings_.send_timeout_ms;
}

void WorkerState::on_pace(uv_timer_t* timer) {
    auto& self = of<WorkerState>(timer);
    for (Connection* c : take_resumable(self.paused_, uv_now(self.loop_))) self.send_response(*c);
    if (self.paused_.empty()) uv_timer_stop(timer);
}

void WorkerState::send_response(Connection& c) {
    Exchange& e = *c.exchange;
    // File bytes handed to the kernel this turn: a block, or what the rate limits allow.
    uint64_t wait_ms = 0;
    const bool limited = settings_.limit_rate > 0 || e.rate_key != 0;
    uint64_t file_budget = limited ? rate_budget(e, wait_ms) : settings_.block_size;
    // The connection's last bytes wait for its FIN (over TLS, and its
    // close_notify); a file body sent with sendfile(2) cannot.
    using Then = smp::tls::Stream::Then;
    const Then after_last = closes_after(e) ? Then::close : Then::unknown;
    bool progressed = false;
    while (e.segment < e.segments.size()) {
        const Segment& s = e.segments[e.segment];
        ssize_t sent = 0;
        if (!s.from_file) {
            // Gather this and the following memory segments in one call; say
            // more is coming when a file segment follows, so that a small
            // response leaves in as few packets as possible.
            std::array<iovec, kMaxIovecs> vectors;
            size_t count = 0;
            size_t index = e.segment;
            uint64_t skip = e.segment_sent;
            for (; index < e.segments.size() && !e.segments[index].from_file && count < kMaxIovecs; ++index) {
                const Segment& m = e.segments[index];
                vectors[count++] = {e.out.data() + m.offset + skip, m.length - skip};
                skip = 0;
            }
            const bool more = index < e.segments.size();
            sent = smp::tls::send(c.tls.get(), c.fd, vectors.data(), count, more ? Then::more : after_last);
        } else {
            if (file_budget == 0) break;
            off_t offset = static_cast<off_t>(s.offset + e.segment_sent);
            const uint64_t length = std::min(s.length - e.segment_sent, file_budget);
            const bool last = e.segment + 1 == e.segments.size() && length == s.length - e.segment_sent;
            const Then then = last ? after_last : Then::unknown;
            if (e.body_in_memory) {
                const iovec body{e.body.data() + offset, length};
                sent = smp::tls::send(c.tls.get(), c.fd, &body, 1, then);
            } else if (c.tls) {
                sent = c.tls->write_file(e.file->fd, offset, length, then);
            } else {
                sent = sendfile(c.fd, e.file->fd, &offset, length);
            }
            if (sent == 0) {
                // The file shrank under us: the promised length cannot be kept.
                return close_connection(c, SMP_END_READ_ERROR);
            }
        }
        if (sent < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                set_poll(c, c.tls ? c.tls->poll_events() : UV_WRITABLE);
                break;
            }
            const bool client_gone = errno == EPIPE || errno == ECONNRESET;
            return close_connection(c, client_gone ? SMP_END_CLIENT_CLOSED : SMP_END_WRITE_ERROR);
        }
        progressed = true;
        // Account for what the kernel took, segment by segment.
        uint64_t remaining = static_cast<uint64_t>(sent);
        while (remaining > 0) {
            const Segment& current = e.segments[e.segment];
            const uint64_t taken = std::min(remaining, current.length - e.segment_sent);
            if (current.from_file) {
                const uint64_t first = current.offset + e.segment_sent;
                if (!e.intervals.empty() && e.intervals.back().last + 1 == first)
                    e.intervals.back().last += taken;
                else
                    e.intervals.push_back({first, first + taken - 1});
                file_budget -= std::min(file_budget, taken);
                e.granted -= std::min(e.granted, taken);
            }
            const uint64_t header_left = e.header_total > e.header_bytes ? e.header_total - e.header_bytes : 0;
            const uint64_t header_part = std::min(taken, header_left);
            e.header_bytes += header_part;
            e.body_bytes += taken - header_part;
            e.segment_sent += taken;
            remaining -= taken;
            if (e.segment_sent == current.length) {
                ++e.segment;
                e.segment_sent = 0;
            }
        }
    }
    if (progressed) {
        c.deadline_ms = uv_now(loop_) + settings_.send_timeout_ms;
        if (uv_now(loop_) - e.last_progress_report_ms >= 1000) {
            e.last_progress_report_ms = uv_now(loop_);
            report(c, &e, SMP_END_COMPLETED, false);
        }
    }
    // Over TLS the last bytes taken may still wait in the record buffer.
    if (e.segment == e.segments.size() && c.tls && !c.tls->flush()) {
        if (errno != EAGAIN) return close_connection(c, SMP_END_CLIENT_CLOSED);
        set_poll(c, c.tls->poll_events());
        return;
    }
    if (e.segment < e.segments.size()) {
        // More to send: wait for the rate budget, for room in the socket, or for the next turn.
        // Over TLS, a head kept for its body goes now when the body waits.
        if (c.tls && c.tls->holding() && !c.tls->flush() && errno != EAGAIN)
            return close_connection(c, SMP_END_CLIENT_CLOSED);
        if (limited && file_budget == 0 && e.segments[e.segment].from_file) {
            if (wait_ms == 0) rate_budget(e, wait_ms);
            if (wait_ms > 0) return pause(c, wait_ms);
        }
        set_poll(c, UV_WRITABLE);
        return;
    }
    finish_exchange(c, smp::protocol::end_reason_for_status(e.status));
    after_response(c);
}

// ---- ending -----------------------------------------------------------------

void WorkerState::report(Connection& c, const Exchange* e, smp_end_reason reason, bool final) {
    smp_record record =
        new_record(c, "http_download", e != nullptr, e != nullptr ? e->start_us : c.request_start_us, reason);
    // The request head (a body is not read: the connection closes after the
    // response); a head cut short or too large: what of it arrived.
    record.received_bytes = e != nullptr && e->header_length > 0 ? e->header_length : c.in_length;
    record.tls_version = c.tls ? c.tls->version() : nullptr;  // static strings of OpenSSL's
    if (e != nullptr) {
        record.method = e->request_parsed ? http_method_str(static_cast<http_method>(e->parser.method)) : nullptr;
        record.protocol = e->parser.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
        record.target = c_string(e->target);
        record.path = e->path.empty() && e->status == 0 ? nullptr : e->path.c_str();
        record.user_agent = c_string(e->user_agent);
        record.referer = c_string(e->referer);
        record.range = c_string(e->range);
        record.forwarded_ip = e->has_forwarded_client ? e->forwarded_client.data() : nullptr;
        if (e->file != nullptr) {
            record.etag = e->file->etag.c_str();
            record.file_size = static_cast<int64_t>(e->file->size);
        }
        record.status = e->status;
        record.intervals = e->intervals.data();
        record.interval_count = e->intervals.size();
        record.header_bytes = e->header_bytes;
        record.body_bytes = e->body_bytes;
    }
    send_record(record, final);
}

void WorkerState::finish_exchange(Connection& c, smp_end_reason reason) {
    Exchange& e = *c.exchange;
    report(c, &e, reason, true);
    // A listing (no file) is not a download.
    if (reason == SMP_END_COMPLETED && (e.status == 200 || e.status == 206) && e.parser.method == HTTP_GET &&
        e.file != nullptr)
        log_file_downloaded(c, "http_download", e.path, e.status, e.body_bytes, e.start_us);
    if (e.file != nullptr) files_.release(e.file);
    e.file = nullptr;
    if (slots_) slots_->release(e.download_slot);
    if (e.cache_call != nullptr) core_->cache_cancel(worker_, e.cache_call);
    e.cache_call = nullptr;
    e.detach_listing();
}

void WorkerState::after_response(Connection& c) {
    Exchange* e = c.exchange;
    const bool keep = !closes_after(*e);
    const size_t consumed = e->header_length;
    // The client may still be sending: a body this module did not read, or
    // a request refused before its end was read.
    const bool unread = has_body(e->parser) || smp::protocol::status_closes_connection(e->status);
    give_exchange(c.exchange);
    if (!keep) return linger(c, unread, c.in_length - consumed);
    // Keep-alive: what follows the request in the buffer is the next one.
    c.in_length -= consumed;
    if (c.in_length > 0) {
        std::memmove(c.in, c.in + consumed, c.in_length);
        c.request_start_us = wall_clock_us();
    }
    c.state = ConnectionState::reading;
    set_phase(c, c.in_length > 0 ? SMP_PHASE_READING : SMP_PHASE_IDLE);
    if (c.in_length > 0) {
        c.deadline_ms = uv_now(loop_) + settings_.header_timeout_ms;
        return process_input(c);
    }
    give_buffer(c.in);
    c.request_start_us = 0;
    c.deadline_ms = uv_now(loop_) + settings_.keepalive_timeout_ms;
    set_poll(c, UV_READABLE);
    // A next request TLS already decrypted: the socket will not say so.
    if (c.tls && c.tls->has_buffered_input()) on_readable(c);
}

void WorkerState::linger(Connection& c, bool unread, size_t buffered) {
    give_buffer(c.in);
    c.in_length = 0;
    c.state = ConnectionState::lingering;
    set_phase(c, SMP_PHASE_IDLE);  // nothing more is asked: what it sends is dropped
    c.deadline_ms = uv_now(loop_) + settings_.lingering_timeout_ms;
    if (c.tls) c.tls->close_notify();
    if (!may_have_unread(c, unread, buffered)) return close_connection(c, SMP_END_COMPLETED);
    shut_write(c);
    set_poll(c, UV_READABLE);
}

void WorkerState::close_connection(Connection& c, smp_end_reason reason) {
    if (c.closing) return;
    c.closing = true;
    if (c.exchange != nullptr) {
        finish_exchange(c, reason);
        give_exchange(c.exchange);
    }
    give_buffer(c.in);
    release_and_close(c, reason, "http_download");
}

void WorkerState::set_poll(Connection& c, int events) {
    if (c.poll_events == events) return;
    c.poll_events = events;
    if (events == 0)
        uv_poll_stop(&c.poll);
    else
        uv_poll_start(&c.poll, events, on_poll);
}

}  // namespace smp::http
