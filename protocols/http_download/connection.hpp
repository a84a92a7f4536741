// http_download's worker side: settings, the per-worker state, and the
// connection state machine (read a request, send the response, repeat).
#pragma once

#include <http_parser.h>
#include <uv.h>

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "autoindex.hpp"
#include "conditional.hpp"
#include "file_cache.hpp"
#include "forwarded.hpp"
#include "limits.hpp"
#include "mime.hpp"
#include "range.hpp"
#include "request_head.hpp"
#include "smp_module.h"
#include "tls.hpp"
#include "worker_base.hpp"

namespace smp::http {

// The module's settings, read in the master from the config table.
// open_file_cache's default: a download site's hot files, at most half of
// the descriptors a process may open (limit_open_file_cache).
inline constexpr size_t kDefaultOpenFileCache = 16384;

struct Settings : ModuleLimits {
    const smp_core_api* core = nullptr;
    std::string root;
    int root_fd = -1;
    uint64_t block_size = 2 * 1024 * 1024;
    size_t max_ranges = 16;
    size_t max_header_size = 8 * 1024;
    uint64_t header_timeout_ms = 10'000;
    uint64_t keepalive_timeout_ms = 75'000;
    uint64_t send_timeout_ms = 60'000;
    uint64_t lingering_timeout_ms = 2'000;
    // Unsent bytes a connection's socket may hold (TCP_NOTSENT_LOWAT); 0: the kernel's default.
    uint64_t notsent_lowat = 64 * 1024;
    uint64_t send_min_rate = 240;  // bytes/s a client must take over each window while a response is sent; 0: any
    size_t open_file_cache = kDefaultOpenFileCache;
    uint64_t open_file_cache_valid_ms = 1'000;
    MimeTypes mime;
    // Beside the limits every module has (ModuleLimits, limits.hpp): the
    // counters and buckets are shared by the workers and kept across a reload.
    uint64_t limit_rate_per_download = 0;          // bytes/s shared by the requests of one download; 0: none
    std::shared_ptr<SharedBuckets> buckets;        // when limit_rate_per_download is on; the same
    std::shared_ptr<smp::tls::ServerContext> tls;  // HTTPS: made in the master, shared by the workers by fork
    // A plain listener that sends every request to HTTPS (308), at this port.
    bool redirect_https = false;
    uint16_t https_port = 443;
    std::string hsts;  // Strict-Transport-Security on responses over TLS; empty: none
    // secure_link: only signed links are served; the first secret signs.
    std::vector<std::string> link_secrets;
    bool link_bind_ip = false;
    // Directory listings (docs/http.md, "Directory listings").
    Autoindex autoindex = Autoindex::off;
    size_t autoindex_max_entries = 10'000;
};

// A directory listing being read on libuv's thread pool (connection.cpp).
struct ListingJob;

// The room for a cached body that a pooled exchange keeps between requests.
constexpr size_t kKeptBodyCapacity = 64 * 1024;

// A piece of a response: bytes of `Exchange::out`, or bytes of the file.
// One request and its response. Pooled per worker and reused, so the steady
// state allocates nothing: the vectors and strings keep their capacity.
// What the request said (RequestHead) is kept as it was parsed: views into the
// connection's input buffer, NUL-terminated in place.
struct Exchange : RequestHead {
    bool request_parsed = false;  // the header block parsed without error
    size_t header_length = 0;     // bytes of the request in the input buffer

    ClientAddress forwarded_client{};  // the client behind a trusted proxy, when known
    bool has_forwarded_client = false;

    // The response.
    std::string path;  // decoded, relative to the root
    std::string out;   // response header and multipart framing
    std::vector<Segment> segments;
    size_t segment = 0;
    uint64_t segment_sent = 0;
    RangeRequest range_request;
    std::vector<smp_interval> intervals;
    OpenFile* file = nullptr;
    std::string body;             // the file's bytes, when they came from the shared cache
    bool body_in_memory = false;  // file segments are sent from `body`, not the file
    int status = 0;
    bool close_after = false;
    uint64_t header_bytes = 0;
    uint64_t body_bytes = 0;
    uint64_t header_total = 0;  // bytes of the response header to send
    int64_t start_us = 0;
    uint64_t last_progress_report_ms = 0;
    Slot download_slot;               // unique_ip, held until the exchange ends
    std::string cache_key;            // the file's key in the shared cache, when it is asked
    smp_async* cache_call = nullptr;  // the shared cache has not answered yet
    uint64_t rate_start_ms = 0;       // when the response began, for limit_rate
    uint64_t rate_key = 0;            // the download's shared budget (limit_rate_per_download); 0: none
    uint64_t granted = 0;             // bytes of that budget granted and not sent yet
    std::string_view query;           // of the target, without its '?'
    ListingJob* listing = nullptr;    // a directory listing is being read

    // Parked until a plugin answers (a shared slot, the shared cache) or a
    // directory listing has been read.
    bool waiting_for_plugin() const { return download_slot.waiting() || cache_call != nullptr || listing != nullptr; }
    void reset();
    // Leaves a listing being read to free itself when the pool is done
    // (or at once, if it had not started).
    void detach_listing();
};

class WorkerState;

enum class ConnectionState { handshaking, reading, writing, lingering };

struct Connection : smp::protocol::ConnectionBase<Connection> {
    WorkerState* worker = nullptr;
    std::unique_ptr<smp::tls::Stream> tls;  // on an HTTPS listener
    ConnectionState state = ConnectionState::reading;
    uint64_t deadline_ms = 0;
    char* in = nullptr;  // input buffer from the worker's pool; null while idle
    size_t in_length = 0;
    int64_t request_start_us = 0;
    Exchange* exchange = nullptr;
    // send_min_rate's current window: the request it measures, its start, and
    // the response bytes the kernel had taken then.
    uint64_t rate_window_request = 0;
    uint64_t rate_window_ms = 0;
    uint64_t rate_window_sent = 0;
};

class WorkerState : public smp::protocol::WorkerBase<Connection> {
   public:
    WorkerState(const Settings& settings, const smp_worker_context& context);
    // A listing still being read when the worker's state goes (a stop that
    // did not wait for its connections) finds no connection when it ends.
    ~WorkerState() override;

    void accept(int fd, const smp_connection_info& info);
    // Reads the connection's first request, once its limit per client has answered.
    void start_connection(Connection& c);
    void shutdown();
    // The worker is at max_connections: closes up to `count` idle, lingering,
    // head-trickling or slower-than-send_min_rate connections, the longest
    // waiting (or slow) first; how many.
    int reclaim(int count);

    const Settings& settings() const { return settings_; }

   private:
    friend struct ConnectionOps;
    static void on_sweep(uv_timer_t* timer);
    static void on_poll(uv_poll_t* handle, int status, int events);
    static void on_pace(uv_timer_t* timer);
    // send_min_rate: whether it applies to the response `c` is sending;
    // whether its client took less than it in the current window so far; and
    // at the end of a window, whether it did over that window (a new one starts).
    bool min_rate_applies(const Connection& c) const;
    bool slow_so_far(const Connection& c, uint64_t now) const;
    bool below_min_rate(Connection& c, uint64_t now);

    // The connection state machine (connection.cpp).
    void on_handshake(Connection& c);
    // The socket's bytes, through TLS on an HTTPS listener.
    static ssize_t receive(Connection& c, char* into, size_t size);
    void on_readable(Connection& c);
    void on_writable(Connection& c);
    void process_input(Connection& c);
    void start_exchange(Connection& c, size_t header_length);
    void find_forwarded_client(Connection& c);
    void respond(Connection& c);
    void respond_error(Connection& c, int status);
    void respond_redirect(Connection& c);
    // A directory: its index.html, its listing (autoindex), or 403; asked
    // without its trailing slash, a 301 to it first.
    void respond_directory(Connection& c);
    void respond_moved_to_directory(Connection& c);
    // The listing is read and rendered on libuv's thread pool, then sent
    // from the loop; a connection that closes meanwhile leaves the job to
    // free itself.
    void start_listing(Connection& c);
    static void on_listing_read(uv_work_t* work, int status);
    void send_listing(Connection& c, ListingJob& job);
    // The end of every response head: Strict-Transport-Security over TLS
    // (hsts), Connection when needed, and the empty line.
    void end_header(const Connection& c, std::string& out) const;
    // A file's response in steps, each of which may wait for a plugin:
    // checks and the unique_ip slot, then the body from the shared cache,
    // then the head. An exchange parked so reads and writes nothing (on_poll
    // stops reading if the client sends): the plugin answers within its own
    // timeout, and the sweep's send_timeout deadline still holds.
    void respond_file(Connection& c);
    static void on_download_slot(void* data, int answer);
    void fetch_body(Connection& c);
    bool ask_shared_cache(Connection& c);
    static void on_shared_cache(void* data, int answer);
    void use_cache_answer(Exchange& e, int answer);
    void send_file_head(Connection& c);
    void send_response(Connection& c);
    void finish_exchange(Connection& c, smp_end_reason reason);
    void after_response(Connection& c);
    // The connection closes once `e`'s response is sent.
    bool closes_after(const Exchange& e) const { return e.close_after || stopping_; }
    // After the last response: closes at once, or lingers when the client
    // may have sent more (`unread`: the request's own; `buffered`: bytes
    // after it in c.in).
    void linger(Connection& c, bool unread, size_t buffered);
    void close_connection(Connection& c, smp_end_reason reason);
    void set_poll(Connection& c, int events);
    // File bytes the rate limits allow this turn; 0 with `wait_ms` until more.
    uint64_t rate_budget(Exchange& e, uint64_t& wait_ms);
    void pause(Connection& c, uint64_t wait_ms);
    void report(Connection& c, const Exchange* e, smp_end_reason reason, bool final);

    Exchange* take_exchange();
    void give_exchange(Exchange*& exchange);

    const Settings& settings_;
    FileCache files_;
    smp::tls::HandshakeFailures handshake_failures_;
    std::vector<std::pair<uint64_t, Connection*>> reclaimable_;  // reclaim's candidates, kept for their capacity
    uint64_t reclaim_logged_ms_ = 0;
    uint64_t reclaimed_since_log_ = 0;
    std::vector<std::unique_ptr<Exchange>> exchanges_;
    std::vector<Exchange*> free_exchanges_;
    uint64_t boundary_counter_ = 0;
};

}  // namespace smp::http
