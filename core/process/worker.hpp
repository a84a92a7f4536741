// A worker process: its own uv loop, the listeners it adopted, and the
// protocol modules that own the accepted connections.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "anonymize.hpp"
#include "geoip.hpp"
#include "record_codec.hpp"
#include "record_log.hpp"
#include "report_table.hpp"
#include "runtime.hpp"
#include "worker_board.hpp"

namespace smp {

class Worker {
   public:
    // `slot` is 0-based; the worker's id is slot + 1. `seat` is where it
    // posts its readiness and counts for the master (nullptr: nowhere).
    // `logs` is where its records go, one log per collector shard (none:
    // tracking is off; an empty one: the master could not make it).
    Worker(Runtime& runtime, int slot, WorkerSeat* seat, std::vector<std::optional<RecordLogWriter>> logs);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Runs until a graceful stop has drained every connection; returns the
    // process exit code.
    int run();

    // The core API calls, on the worker's loop.
    void transfer(const smp_record& record);
    void close(const smp_record& record);
    void disconnect(const smp_connection_info& info);
    bool trusted_proxy(const char* ip) const { return ip != nullptr && runtime_.trusted_proxies.contains(ip); }
    // The first plugin with shared counters answers, and the first with a
    // cache (ABI 1.8: asynchronously when it can); -1 when none does.
    int limit_acquire(const char* key, uint32_t limit, uint32_t ttl_s);
    int limit_acquire_async(const char* key, uint32_t limit, uint32_t ttl_s, smp_async_done done, void* data,
                            smp_async** call);
    void limit_cancel(smp_async* call);
    void limit_release(const char* key);
    uint64_t cache_max_size() const;
    int cache_get(const char* key, void* buffer, uint64_t size);
    int cache_get_async(const char* key, void* buffer, uint64_t size, smp_async_done done, void* data,
                        smp_async** call);
    void cache_cancel(smp_async* call);
    void cache_set(const char* key, const void* data, uint64_t size);
    // ABI 1.10: metrics and reports.
    void connection_phase(smp_connection_phase from, smp_connection_phase to);
    void plugin_error(const char* module);
    std::string metrics_text() const;
    int query_async(const smp_query& query, smp_query_done done, void* data, smp_async** call);
    void query_cancel(smp_async* call);

   private:
    // A record as it leaves the worker. With privacy.anonymize_ip it is a
    // copy with the client's addresses shortened, and the place looked up
    // from the whole address goes along to the collector.
    // Left uninitialised: made on every record, filled only when shortening.
    struct Outgoing {
        smp_record record;
        AddressShortener::Text client;
        AddressShortener::Text forwarded;
        const char* geo = nullptr;
    };
    const smp_record& outgoing(const smp_record& record, Outgoing& out);
    // The client's place (encode_geo), from a small cache by address.
    const char* place_of(const char* address);
    // `info` for the plugins: its client address shortened when asked.
    const smp_connection_info& for_plugins(const smp_connection_info& info, smp_connection_info& copy,
                                           AddressShortener::Text& client) const;

    struct Watch {
        uv_poll_t poll{};
        Worker* worker = nullptr;
        const Listener* listener = nullptr;
        int fd = -1;
        // The listener's own address when it is bound to one: every
        // connection's local address, known without asking. Empty for a
        // wildcard (0.0.0.0, ::), where each connection is asked.
        sockaddr_storage local{};
        socklen_t local_length = 0;
    };

    // A report asked by query_async: waiting its turn, or running on a
    // thread of libuv's pool.
    struct Query {
        Worker* worker = nullptr;
        uv_work_t work{};
        smp_query query{};
        std::string report, path, bucket;  // what query points at
        smp_query_done done = nullptr;
        void* data = nullptr;
        bool cancelled = false;
        smp_table* table = nullptr;
        std::string error;
        // "in_progress" is the collector's live table, not the store's:
        // answered by the core, which owns the table.
        std::unique_ptr<smp_report::OwnedTable> owned;
    };
    void start_next_query();
    static void run_query(uv_work_t* work);
    static void after_query(uv_work_t* work, int status);
    size_t module_place(const char* module);

    static void on_acceptable(uv_poll_t* handle, int status, int events);
    static void on_signal(uv_poll_t* handle, int status, int events);
    static void on_accept_pause_end(uv_timer_t* timer);
    // Keeps the listener's address in `watch` when it is bound to one.
    static void note_bound_address(Watch& watch);
    void accept_from(Watch& watch);
    void record(const smp_record& record, RecordKind kind, const char* geo);
    uint64_t dropped() const;  // by every log of this worker
    void set_accepting(bool accepting);
    // Full: asks the protocol modules to close cheap connections; how many close.
    int reclaim_connections();
    void pause_accepting();
    void begin_shutdown();
    void finish_if_drained();
    void reopen_logs();
    void start_access_log_timer();
    static void on_access_log_timer(uv_timer_t* timer);
    void post_counts();

    Runtime& runtime_;
    int slot_;
    uint32_t id_;
    WorkerSeat* seat_;
    // Responses that have reported progress and not ended yet (the downloads
    // in progress the master shows in its status), by connection and
    // request, with the bytes sent that the metrics have counted of each.
    std::map<std::pair<uint64_t, uint64_t>, uint64_t> downloads_;
    uv_loop_t loop_{};
    uv_poll_t signal_poll_{};
    uv_timer_t accept_pause_timer_{};
    // Writes the access log's buffered lines; runs only while it holds some.
    uv_timer_t access_log_timer_{};
    int signal_fd_ = -1;
    std::vector<std::unique_ptr<Watch>> watches_;
    std::vector<ModuleInstance*> plugins_;
    ModuleInstance* counters_ = nullptr;  // the first plugin with shared counters
    ModuleInstance* cache_ = nullptr;     // the first plugin with a shared cache
    int64_t connections_ = 0;
    uint64_t next_connection_id_ = 1;
    bool accepting_ = false;
    bool stopping_ = false;
    bool finished_ = false;
    std::vector<std::optional<RecordLogWriter>> logs_;
    uint32_t pid_ = 0;
    metrics::WorkerMetrics* metrics_ = nullptr;  // this worker's part of the server's metrics
    const char* last_module_ = nullptr;          // the module of the last record, and its place
    size_t last_module_place_ = 0;
    ModuleInstance* reports_ = nullptr;  // the first store that answers reports
    std::deque<Query*> queries_;         // the front one runs when query_running_
    bool query_running_ = false;
    // privacy.anonymize_ip: set when addresses are shortened; the geo-IP
    // databases then open in the worker too, and each address's place is
    // kept in a small cache (a client's requests come close together).
    std::optional<AddressShortener> shortener_;
    std::unique_ptr<GeoIp> geoip_;
    std::vector<std::pair<std::string, std::string>> places_;
    bool log_full_ = false;        // a drop episode is under way
    uint64_t dropped_before_ = 0;  // the logs' drop count when the episode began
    uint64_t dropped_without_log_ = 0;
};

}  // namespace smp
