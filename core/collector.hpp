// The stats collector: a child of the master that receives every worker's
// records, merges them into logical downloads, closes the requests of a
// worker that died with reason worker_lost, and once a second hands the
// ended requests and the changed downloads to every store.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "config.hpp"
#include "download_tracker.hpp"
#include "geoip.hpp"
#include "intrusive_list.hpp"
#include "record_codec.hpp"
#include "runtime.hpp"
#include "storage.hpp"

namespace smp {

// What the master tells the collector on the records socket.
struct CollectorNotice {
    static constexpr uint32_t kMagic = 0x534d4331;  // "SMC1"
    uint32_t magic = kMagic;
    uint32_t lost_pid = 0;  // a worker that died: close its requests
};

// One line per finished download, as logged.
std::string describe_download(const LogicalDownload& download, const GeoInfo& geo);

// The last transfer record of every running request, and when it was last
// heard of. A request whose close record never comes (its worker died, or
// the worker's datagram was dropped while the collector fell behind) is
// handed out as lost: by worker, or once silent for too long.
class InFlightRequests {
   public:
    using Key = std::tuple<uint32_t, uint64_t, uint64_t>;  // worker pid, connection, request
    using Lost = std::function<void(DecodedRecord& last)>;

    InFlightRequests() = default;
    InFlightRequests(const InFlightRequests&) = delete;
    InFlightRequests& operator=(const InFlightRequests&) = delete;

    // A transfer record: the request's progress so far, heard at `now_ms`.
    void update(DecodedRecord&& transfer, uint64_t now_ms);
    // The request's close record arrived: nothing is owed any more.
    void erase(const DecodedRecord& close);
    // Hands each running request of worker `pid` to `lost`, and forgets it.
    void take_worker(uint32_t pid, const Lost& lost);
    // Hands each request last heard of before `before_ms` to `lost`, and
    // forgets it; looks at no other (the least recently heard of first).
    // Returns how many.
    size_t take_silent(uint64_t before_ms, const Lost& lost);
    // Hands every request to `lost`: the collector stops.
    void take_all(const Lost& lost);
    size_t size() const { return entries_.size(); }

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
    Collector(Runtime& runtime, int socket_fd);
    Collector(const Collector&) = delete;
    Collector& operator=(const Collector&) = delete;

    // Runs until SIGTERM, then drains the socket and finishes every open
    // download; returns the exit code.
    int run();

   private:
    static void on_readable(uv_poll_t* handle, int status, int events);
    static void on_tick(uv_timer_t* timer);
    static void on_signal(uv_poll_t* handle, int status, int events);
    int receive();  // datagrams read, at most one batch
    void handle(DecodedRecord&& decoded);
    void close_requests_of(uint32_t pid);
    void close_lost(DecodedRecord& last, smp_end_reason reason);
    void close_silent_requests();
    void report_finished_early();
    void trim_after_burst();
    void finish(const LogicalDownload& download);
    void hand_to_stores();
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
    int fd_;
    uv_loop_t loop_{};
    uv_poll_t poll_{};
    uv_timer_t tick_{};
    uv_poll_t signal_poll_{};
    int signal_fd_ = -1;
    DownloadTracker tracker_;
    GeoIp geoip_;
    InFlightRequests in_flight_;
    std::vector<std::unique_ptr<StorageThread>> storage_;  // one per store
    Batch batch_;                                          // what the next tick hands to the stores
    const uint64_t origin_;                                // names this run's batches
    uint64_t records_ = 0;
    uint64_t malformed_ = 0;
    uint64_t downloads_ = 0;
    uint64_t records_at_tick_ = 0;     // records_ at the last tick
    uint64_t records_since_trim_ = 0;  // records of the burst under way
    uint64_t silent_closed_ = 0;       // running requests closed as lost after kSilentRequestMs
    Throttled silent_warning_;
    Throttled cap_warning_;
    bool stopping_ = false;
};

}  // namespace smp
