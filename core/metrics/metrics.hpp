// The server's metrics: counters and gauges in memory that the master maps
// before its first fork, so every worker and stats collector of every
// generation writes its own part and any worker can read the whole to
// answer Prometheus (the dashboard module's /metrics, docs/metrics.md).
//
// Each part has one writer: a worker its seat's, a collector its shard's,
// a storage thread its store's. A writer adds with a relaxed load and store
// (no locked instruction on the request path); a reader sums relaxed loads
// and may see a request's counts a moment before its bytes, never a torn
// number. Counters are never reset: a seat's counters carry on through the
// workers that hold it in turn, so the sums only grow (what Prometheus
// expects of a counter); the gauges of a seat are zeroed when its worker is
// reaped (its connections are gone).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "report_table.hpp"
#include "smp_module.h"

namespace smp::metrics {

using Counter = std::atomic<uint64_t>;
using Gauge = std::atomic<int64_t>;

// One writer: a relaxed read and write, no read-modify-write instruction.
inline void add(Counter& counter, uint64_t n = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
inline void add(Gauge& gauge, int64_t n) {
    gauge.store(gauge.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// Durations of requests and downloads, in seconds: from a quick response to
// a six-hour download over a slow line (the 10 s ceiling of the usual HTTP
// buckets would put every real download in +Inf).
inline constexpr double kDurationBuckets[] = {0.01, 0.05, 0.1, 0.25, 0.5,  1,    2.5,  5,     10,   30,
                                              60,   120,  300, 600,  1800, 3600, 7200, 14400, 21600};
inline constexpr size_t kBucketCount = std::size(kDurationBuckets);

struct Histogram {
    Counter buckets[kBucketCount + 1];  // not cumulative; the last is +Inf
    Counter count;
    Counter sum_us;
    void observe(int64_t duration_us);
};

// Labels with a bounded number of values: module and store names are given
// a place when the master loads a configuration (kNames each at most; a
// name past them counts under the last place, "other").
inline constexpr size_t kNames = 8;
inline constexpr size_t kNameSize = 32;
inline constexpr size_t kStatusClasses = 6;  // none (no response), 1xx .. 5xx
inline constexpr size_t kReasons = 24;       // smp_end_reason, with room to grow
inline constexpr size_t kPhases = 4;         // smp_connection_phase

struct WorkerMetrics {
    Counter requests[kNames][kStatusClasses][kReasons];  // by protocol module
    Counter sent_bytes[kNames];
    Counter received_bytes[kNames];
    Histogram request_duration;
    Counter plugin_errors[kNames];  // by plugin
    Gauge phases[kPhases];          // connections reading, writing, idle
};

struct StoreMetrics {
    Counter batches;
    Counter errors;       // store calls that failed (the batch went to the spool)
    Gauge spool_bytes;    // on disk, waiting to be offered again
    Counter purged_rows;  // deleted by tracking.retention
};

// The downloads running now, as the stats collector last saw them (once a
// second): one row per download with a response still being sent. Written
// under a sequence lock (odd while the writer is in it), read by copying
// and checking the sequence did not move.
struct LiveDownload {
    char path[256];
    char client_ip[48];
    char country[4];
    uint64_t id;  // the open download's, 0 while none of its requests has ended
    uint64_t file_size;
    uint64_t bytes;  // distinct bytes of the file delivered so far
    uint64_t sent;   // bytes sent by the running responses
    int64_t started_us;
    int64_t last_us;
    uint32_t requests;  // running now, and ended within the download
    double speed_bps;   // of the running responses, over their time so far
};

struct LiveDownloads {
    static constexpr size_t kRows = 100;
    std::atomic<uint64_t> sequence;
    uint32_t count;
    LiveDownload rows[kRows];
    // A consistent copy of the rows into `out` (kRows of them); how many.
    size_t read(LiveDownload* out) const;
    void write(const LiveDownload* rows, size_t count);
};

struct CollectorMetrics {
    Counter records;  // request records merged
    Gauge backlog_bytes;
    Gauge lag_us;
    Gauge downloads_open;
    Counter downloads_finished[kReasons];  // by the download's outcome
    Histogram download_duration;           // first request to last byte
    StoreMetrics stores[kNames];           // by store (module) name
    LiveDownloads live;
};

// What core->counters reports of the workers' counters, summed.
struct Totals {
    uint64_t requests = 0;
    uint64_t sent_bytes = 0;
};

class Board {
   public:
    static constexpr size_t kSeats = 4096;  // as many as the worker board's
    static constexpr size_t kShards = 16;   // tracking.collectors at most

    // Maps the shared memory (the master, before any fork).
    Board();
    ~Board();
    Board(const Board&) = delete;
    Board& operator=(const Board&) = delete;

    WorkerMetrics& worker(size_t seat) { return shared_->workers[seat]; }
    CollectorMetrics& collector(size_t shard) { return shared_->collectors[shard % kShards]; }
    const CollectorMetrics& collector(size_t shard) const { return shared_->collectors[shard % kShards]; }
    // The place of a module's name in the labels, given when first asked
    // (the master, before fork); the last place when all are taken.
    size_t module_place(const std::string& name) { return place(shared_->modules, name); }
    size_t plugin_place(const std::string& name) { return place(shared_->plugins, name); }
    size_t store_place(const std::string& name) { return place(shared_->stores, name); }
    // The place given to a name, read only (any process); the last place
    // when the master gave it none.
    size_t module_of(const char* name) const { return find(shared_->modules, name); }
    size_t plugin_of(const char* name) const { return find(shared_->plugins, name); }
    size_t store_of(const char* name) const { return find(shared_->stores, name); }
    // A worker's seat reaped: its gauges drop to zero, its counters stay.
    void seat_emptied(size_t seat);
    // The seats used so far: those past it were never written.
    void seat_used(size_t seat);

    // The whole, in Prometheus's text format (0.0.4). `connections` and
    // `downloads_in_progress` are the worker board's sums.
    std::string prometheus_text(int64_t connections, int64_t downloads_in_progress) const;
    // smprotocol_requests_total and smprotocol_sent_bytes_total, each summed over its labels.
    Totals totals() const;
    // Every collector shard's downloads in progress, the most recently
    // active first, at most LiveDownloads::kRows.
    std::vector<LiveDownload> live_downloads() const;

   private:
    struct Shared {
        char modules[kNames][kNameSize];  // protocol modules
        char plugins[kNames][kNameSize];
        char stores[kNames][kNameSize];
        std::atomic<uint64_t> seats_used;
        CollectorMetrics collectors[kShards];
        WorkerMetrics workers[kSeats];
    };
    static size_t place(char (&names)[kNames][kNameSize], const std::string& name);
    static size_t find(const char (&names)[kNames][kNameSize], const char* name);

    Shared* shared_ = nullptr;
};

// The rows of the `in_progress` report (the columns of report_table.hpp's),
// from the collectors' live tables, filtered by the query's path and since.
std::unique_ptr<smp_report::OwnedTable> live_downloads_table(const std::vector<LiveDownload>& rows,
                                                             const smp_query& query);

// Index of an HTTP status's class (0: none, 1..5: 1xx..5xx).
inline size_t status_class(int status) { return status >= 100 && status < 600 ? static_cast<size_t>(status / 100) : 0; }

}  // namespace smp::metrics
