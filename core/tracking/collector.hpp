// The stats collector: a child of the master that reads every worker's
// record log, merges the requests into logical downloads, closes the
// requests of a worker that died with reason worker_lost, and once a second
// hands the ended requests and the changed downloads to every store. What it
// has read is checkpointed and journaled (collector_checkpoint.hpp), so a
// collector that crashes or restarts merges every record exactly once.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "client_class.hpp"
#include "collector_checkpoint.hpp"
#include "config.hpp"
#include "download_tracker.hpp"
#include "geoip.hpp"
#include "intrusive_list.hpp"
#include "metrics.hpp"
#include "record_codec.hpp"
#include "record_log.hpp"
#include "runtime.hpp"
#include "storage.hpp"

namespace smp {

// A download's id: the place of the record that opened it, in its
// worker's log. The same after a replay, and never given twice: log numbers
// are never reused (a log holds fewer than 2^40 records: 160 days of a
// worker answering 80,000 requests a second).
constexpr uint64_t download_id(uint64_t log_number, uint64_t log_index) { return log_number << 40 | log_index; }

// One line per finished download, as logged.
std::string describe_download(const LogicalDownload& download, const GeoInfo& geo);

// The last transfer record of every running request, and when it was last
// heard of. A request whose close record never comes (its worker died, or
// its close record found the worker's log full) is handed out as lost: by
// log, or once silent for too long.
class InFlightRequests {
   public:
    using Key = std::tuple<uint64_t, uint64_t, uint64_t>;  // log number, connection, request
    using Lost = std::function<void(DecodedRecord& last)>;

    InFlightRequests() = default;
    InFlightRequests(const InFlightRequests&) = delete;
    InFlightRequests& operator=(const InFlightRequests&) = delete;

    // A transfer record (owned): the request's progress so far, heard at `now_ms`.
    void update(DecodedRecord&& transfer, uint64_t now_ms);
    // The request's close record arrived: nothing is owed any more.
    void erase(const DecodedRecord& close);
    // Hands each running request of log `number` to `lost` (by connection
    // and request), and forgets it.
    void take_log(uint64_t number, const Lost& lost);
    // Hands each request last heard of before `before_ms` to `lost`, and
    // forgets it; looks at no other (the least recently heard of first).
    // Returns how many.
    size_t take_silent(uint64_t before_ms, const Lost& lost);
    size_t size() const { return entries_.size(); }
    // Calls `each` with the last progress record of every running request.
    template <typename Each>
    void each(Each&& each) const {
        for (const auto& [key, entry] : entries_) each(entry.last);
    }
    // For the checkpoint: every running request, and back from one.
    std::vector<RunningRequest> copy() const;
    void restore(std::vector<RunningRequest>&& running);

   private:
    struct Entry {
        DecodedRecord last;
        uint64_t heard_ms = 0;
        ListLinks<Entry> by_heard;
    };
    static Key key_of(const DecodedRecord& decoded);
    void take(std::map<Key, Entry>::iterator it, const Lost& lost);

    std::map<Key, Entry> entries_;                     // by worker first: a dead one's are found together
    IntrusiveList<Entry, &Entry::by_heard> by_heard_;  // the least recently heard of first
};

class Collector {
   public:
    // Reads the record logs in `log_dir`: those of shard `shard` of
    // tracking.collectors (record_log_dir()).
    Collector(Runtime& runtime, std::string log_dir, int shard = 0);
    Collector(const Collector&) = delete;
    Collector& operator=(const Collector&) = delete;

    // Runs until SIGTERM, then reads the logs to their ends and, when every
    // worker is gone, finishes every open download; returns the exit code.
    int run();

   private:
    struct Log {
        RecordLogReader reader;
        bool done = false;  // ended, read to its end, its running requests closed
    };
    // A checkpoint being written, by a forked copy of the collector or by
    // a thread from what the loop encoded, and committed once the stores
    // have every batch handed over before it.
    struct PendingCheckpoint {
        pid_t pid = 0;         // the copy writing it; 0 when a thread is
        bool written = false;  // and on disk
        uint64_t generation = 0;
        uint64_t sequence = 0;  // the last batch handed over before it
        std::vector<LogPlace> logs;
    };

    static void on_poll(uv_timer_t* timer);
    static void on_backlog(uv_idle_t* idle);
    static void on_tick(uv_timer_t* timer);
    static void on_signal(uv_poll_t* handle, int status, int events);
    static void on_checkpoint_written(uv_work_t* work, int status);

    // Start-up: the checkpoint, the logs, the journals since.
    void recover();
    void open_new_logs(const std::vector<LogPlace>& places);
    bool replay(const JournalEntry& entry);
    // Reads what the workers appended, at most `budget` records; true when
    // more is waiting.
    bool read_logs(uint64_t budget);
    // Reads log `log` up to record `last` (or as far as it goes); how many.
    uint64_t read_log(Log& log, uint64_t last);
    void handle(Log& log, const RecordLogReader::Frame& frame);
    void end_log(Log& log);
    void close_lost(DecodedRecord& last, uint64_t id, smp_end_reason reason);
    void tick(int64_t now_us);
    void close_silent_requests();
    void report_finished_early();
    void report_dropped();
    void post_metrics(int64_t now_us);
    void publish_live_downloads();
    // Malloc keeps what the collector frees, rather than mapping it fresh
    // each time; trim_after_burst gives it back once the traffic is quiet.
    static void keep_freed_memory();
    void trim_after_burst();
    void finish(const LogicalDownload& download);
    // Where the client is: the place its worker sent with the shortened
    // address (privacy.anonymize_ip), else looked up from the address.
    GeoInfo place_of(const LogicalDownload& download) const;
    GeoInfo place_of(std::string_view client_ip, std::string_view geo) const;
    // Adds the request record to the next batch, with its agent's class.
    void add_to_batch(DecodedRecord&& record);
    void hand_over_if_full();
    void hand_to_stores();
    bool stores_have(uint64_t sequence) const;
    bool logs_filling() const;
    bool stores_behind() const;
    // A checkpoint of this instant; committed by finish_checkpoint once
    // the stores have every batch before it. Written by a forked copy, or,
    // when encoding it takes at most tracking.checkpoint_pause, encoded
    // here and written by a thread; at the stop (`here`), written before
    // this returns.
    void start_checkpoint(bool here = false);
    bool encodes_within_pause() const;
    std::string encode_checkpoint_now(const PendingCheckpoint& pending) const;
    void learn_encoding_cost(uint64_t took_ns, size_t bytes, uint64_t generation);
    bool write_on_thread(std::string data, uint64_t generation);
    void checkpoint_not_written(uint64_t generation);
    uint64_t checkpoint_took_ms() const;
    void finish_checkpoint();
    // Kills the copy still writing a checkpoint and removes its file; the
    // copy is reaped by reap_killed_writers.
    void abandon_checkpoint();
    void abandon_stuck_checkpoint();
    void reap_killed_writers(bool wait);
    std::vector<LogPlace> places() const;
    void stop();
    void start_stores();
    void stop_stores();

    // A warning said at most once a minute while its count grows.
    struct Throttled {
        uint64_t said = 0;  // the count when last said
        uint64_t said_at_ms = 0;
        bool ever = false;
        // The count since it was last said when the line is due, else 0.
        uint64_t due(uint64_t count, uint64_t now_ms);
    };
    Runtime& runtime_;
    const std::string dir_;
    const int shard_;
    uv_loop_t loop_{};
    uv_timer_t poll_{};
    uv_idle_t backlog_{};
    uv_timer_t tick_{};
    uv_poll_t signal_poll_{};
    int signal_fd_ = -1;
    std::map<uint64_t, Log> logs_;   // by number
    std::set<uint64_t> unreadable_;  // logs that could not be mapped (said once)
    DownloadTracker tracker_;
    GeoIp geoip_;
    ClientClassifier classifier_;  // tracking.client_classes, each agent once
    InFlightRequests in_flight_;
    std::vector<std::unique_ptr<StorageThread>> storage_;  // one per store
    Batch batch_;                                          // what the next tick hands to the stores
    const uint64_t origin_;                                // names this run's batches
    Journal journal_;
    bool journal_failing_ = false;
    // This collector's part of the server's metrics (nullptr: none). A
    // recovery replays what an earlier collector counted: not counted again.
    metrics::CollectorMetrics* metrics_ = nullptr;
    bool recovering_ = false;
    int64_t last_read_end_us_ = 0;  // of the last request record read
    int64_t clock_us_ = 0;          // the time of the last tick, journaled: replays see the same time
    std::optional<PendingCheckpoint> pending_;
    struct KilledWriter {
        pid_t pid;
        uint64_t generation;
    };
    std::vector<KilledWriter> killed_writers_;  // not reaped yet
    uint64_t checkpoint_started_ms_ = 0;
    uint64_t checkpoint_started_ns_ = 0;  // uv_hrtime(): for checkpoint_took_ms()
    uint64_t checkpoint_took_ms_ = 0;     // from its start to its file on disk, last time
    // What encoding a checkpoint here cost for each open download and
    // running request, last measured (at first, about what it costs on the
    // machines of docs/tracking.md).
    uint64_t encode_ns_per_entry_ = 1000;
    bool thread_write_slow_said_ = false;
    bool checkpoint_failing_ = false;
    uint64_t records_ = 0;
    uint64_t malformed_ = 0;
    uint64_t downloads_ = 0;
    uint64_t records_at_tick_ = 0;     // records_ at the last tick
    uint64_t records_since_trim_ = 0;  // records of the burst under way
    uint64_t silent_closed_ = 0;       // running requests closed as lost after kSilentRequestMs
    Throttled silent_warning_;
    Throttled cap_warning_;
    Throttled dropped_warning_;
    bool stopping_ = false;
};

}  // namespace smp
