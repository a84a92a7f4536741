// forward's worker side: settings, the per-worker state, and the relay of
// one client connection to the origin (an HTTP exchange after another, or a
// byte stream in tcp mode).
#pragma once

#include <http_parser.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chunked_framing.hpp"
#include "forwarded.hpp"
#include "head_parser.hpp"
#include "heads.hpp"
#include "limits.hpp"
#include "relay_buffer.hpp"
#include "smp_module.h"
#include "tls.hpp"
#include "worker_base.hpp"

namespace smp::forward {

enum class Mode { http, tcp };

// The module's settings, read in the master from the config table.
struct Settings : smp::http::ModuleLimits {
    const smp_core_api* core = nullptr;
    Mode mode = Mode::http;
    std::string origin_name;  // "host:port", for log lines
    std::string origin_host;  // forward_tls_name, else forward_host as written: the name TLS asks for and checks
    sockaddr_storage origin{};
    socklen_t origin_length = 0;
    uint64_t connect_timeout_ms = 5'000;
    uint64_t read_timeout_ms = 60'000;
    uint64_t send_timeout_ms = 60'000;
    uint64_t header_timeout_ms = 10'000;
    uint64_t keepalive_timeout_ms = 75'000;
    size_t max_header_size = 8 * 1024;
    size_t buffer_size = 64 * 1024;
    std::shared_ptr<smp::tls::ServerContext> tls;  // HTTPS to the clients: made in the master
    // TLS to the origin (forward_tls): made in the master, shared by the
    // workers by fork; null for plain TCP.
    std::shared_ptr<SSL_CTX> origin_tls;
    // The limits are http_download's (ModuleLimits, docs/limits.md): the
    // counters shared by the workers, one table per origin.
};

class WorkerState;
struct Connection;

// A connection to the origin. Its own allocation: it is closed and freed on
// its own schedule (an origin that closes between two requests is replaced
// while the client connection lives on).
struct Upstream {
    uv_poll_t poll{};
    int fd = -1;
    Connection* owner = nullptr;
    int poll_events = 0;
    bool connected = false;                 // ready for bytes: the TCP connect, and the TLS handshake with forward_tls
    bool tcp_connected = false;             // the TCP connect alone
    std::unique_ptr<smp::tls::Stream> tls;  // forward_tls
    bool readable = true;                   // not known to be drained: worth a read
    bool writable = true;
    bool eof = false;         // the origin sent its FIN
    bool shut_write = false;  // our FIN went out (tcp mode)
    uint64_t exchanges = 0;   // responses completed on it
    uint64_t started_ms = 0;  // connect() called
};

// One request and its response (http mode). Lives inside its connection and
// is reset between requests, so the strings keep their capacity. The head
// being parsed (the request's, then the response's) is gathered by the
// common parser (ParsedHead).
struct Exchange : smp::http::ParsedHead {
    http_parser request{};
    http_parser response{};

    // What the record needs, copied out of the buffers that move on.
    std::string method;
    std::string target;
    std::string path;
    std::string user_agent;
    std::string referer;
    std::string range;
    std::string etag;
    smp::http::ClientAddress forwarded_client{};
    bool has_forwarded_client = false;
    bool head_request = false;

    std::string upstream_head;  // the request head for the origin; kept for a retry
    size_t upstream_head_sent = 0;
    uint64_t request_body_ready = 0;  // bytes of the client buffer that belong to this request, parsed
    bool request_body_sent = false;   // a body byte left: the request cannot be retried
    bool request_chunked = false;     // its body is chunked: checked by request_framing as it is relayed
    ChunkedFraming request_framing;

    std::string client_head;  // the response head for the client
    size_t client_head_sent = 0;
    size_t local_body_length = 0;  // a local response's body, at the end of client_head
    bool response_head_done = false;
    bool response_complete = false;
    bool local_response = false;       // answered by this proxy (4xx, 502, 504)
    uint64_t response_body_ready = 0;  // bytes of the origin buffer parsed and ready for the client
    uint64_t wire_parsed = 0;          // body bytes (framing included) parsed from the origin
    uint64_t wire_sent = 0;            // of those, taken by the client
    uint64_t parse_base = 0;           // wire offset of the bytes being parsed now
    const char* parse_at = nullptr;    // and where they are
    bool track_body = false;           // a 200 or a single-range 206: body bytes are file bytes
    BodyMap body_map;
    std::vector<smp_interval> intervals;
    int64_t file_size = -1;
    int status = 0;
    smp_end_reason reason = SMP_END_COMPLETED;
    bool close_after = false;
    bool origin_keeps_alive = true;  // the final response head let the origin connection persist
    bool retried = false;

    uint64_t header_bytes = 0;
    uint64_t body_bytes = 0;
    uint64_t received_bytes = 0;  // of the client: the request head, then its body (framing included)
    int64_t start_us = 0;
    uint64_t last_progress_report_ms = 0;
    uint64_t rate_start_ms = 0;     // the response head came, for limit_rate
    smp::http::Slot download_slot;  // unique_ip, held until the exchange ends; the relay waits while asked

    void reset();
};

enum class Phase {
    handshaking,   // HTTPS: the client's TLS handshake, before anything else
    request_head,  // http: waiting for (the rest of) a request head
    exchange,      // http: relaying one request and its response
    stream,        // tcp: relaying bytes both ways
    lingering,     // the last response went out; reading what the client still sends, then closing
};

struct Connection : smp::protocol::ConnectionBase<Connection> {
    WorkerState* worker = nullptr;
    Phase phase = Phase::request_head;
    bool readable = true;
    bool writable = true;
    bool eof = false;         // the client sent its FIN
    bool shut_write = false;  // our FIN went out (tcp mode)
    RelayBuffer in;           // client to origin
    RelayBuffer out;          // origin to client
    Upstream* upstream = nullptr;
    std::unique_ptr<smp::tls::Stream> tls;  // on an HTTPS listener
    Exchange exchange;
    int64_t request_start_us = 0;
    uint64_t phase_started_ms = 0;    // the current wait began (head, idle keep-alive, linger)
    uint64_t client_progress_ms = 0;  // the client last took or sent a byte
    uint64_t origin_progress_ms = 0;  // the origin last took or sent a byte
    uint64_t bytes_from_client = 0;   // tcp mode: each way
    uint64_t bytes_to_client = 0;
};

class WorkerState : public smp::protocol::WorkerBase<Connection> {
   public:
    WorkerState(const Settings& settings, const smp_worker_context& context);

    void accept(int fd, const smp_connection_info& info);
    // Starts the relay, once the connection's limit per client has answered.
    void start_connection(Connection& c);
    void shutdown();

   private:
    friend struct ParserCallbacks;
    static void on_sweep(uv_timer_t* timer);
    static void on_client_poll(uv_poll_t* handle, int status, int events);
    static void on_upstream_poll(uv_poll_t* handle, int status, int events);
    static void on_upstream_closed(uv_handle_t* handle);
    static void on_pace(uv_timer_t* timer);

    // Moves every byte that can move now, then waits for the sockets (connection.cpp).
    void pump(Connection& c);
    // What start_connection does once a TLS client has finished its
    // handshake; false when the connection was closed.
    bool begin_relay(Connection& c);
    bool step_handshake(Connection& c);
    bool step_http(Connection& c);
    bool step_stream(Connection& c);
    bool read_request_head(Connection& c);
    void start_exchange(Connection& c, size_t head_length);
    static void on_download_slot(void* data, int answer);
    bool relay_request(Connection& c);
    bool read_response(Connection& c);
    void parse_response(Connection& c);
    void parse_response_head(Connection& c, size_t head_length);
    bool send_to_client(Connection& c);
    // Body bytes limit_rate lets go to the client now; 0 and a pause when none.
    size_t rate_budget(Connection& c, size_t want);
    bool send_to_origin(Connection& c);
    // Bytes over TLS counted as sent that wait in the record buffer go out
    // when the socket takes them; true when they did.
    bool flush_to_client(Connection& c);
    bool flush_to_origin(Connection& c);
    void respond_locally(Connection& c, int status);
    void origin_failed(Connection& c, int status, const char* what);
    void finish_exchange(Connection& c);
    void release_download_slot(Exchange& e);
    // After the last response: closes at once, or lingers when the client
    // may have sent more (`unread`: the request's own; `buffered`: bytes
    // after it in c.in).
    void linger(Connection& c, bool unread, size_t buffered);
    void close_connection(Connection& c, smp_end_reason reason);
    void check_deadlines(Connection& c, uint64_t now);
    void update_polls(Connection& c);

    bool connect_origin(Connection& c);
    // One step of the TLS handshake with the origin; true once it is done.
    bool origin_handshake(Connection& c);
    void close_upstream(Connection& c);
    void upstream_failure(const char* what);
    void upstream_success();

    void report(Connection& c, smp_end_reason reason, bool final);
    void take_buffer(RelayBuffer& buffer);
    void give_buffer(RelayBuffer& buffer);

    const Settings& settings_;
    smp::tls::HandshakeFailures handshake_failures_;  // clients' handshakes, told in the log
    // Origin failures are logged once per burst: the first, then a count.
    bool origin_failing_ = false;
    uint64_t failures_in_burst_ = 0;
    uint64_t burst_started_ms_ = 0;
    uint64_t burst_logged_ms_ = 0;
};

}  // namespace smp::forward
