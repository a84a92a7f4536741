// The stats collector: a child of the master that receives every worker's
// records, merges them into logical downloads, closes the requests of a
// worker that died with reason worker_lost, and once a second hands the
// ended requests and the changed downloads to every store.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "config.hpp"
#include "download_tracker.hpp"
#include "geoip.hpp"
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
    void finish(const LogicalDownload& download);
    void hand_to_stores();
    void stop();
    void start_stores();
    void stop_stores();

    using RequestKey = std::tuple<uint32_t, uint64_t, uint64_t>;  // worker pid, connection, request
    Runtime& runtime_;
    int fd_;
    uv_loop_t loop_{};
    uv_poll_t poll_{};
    uv_timer_t tick_{};
    uv_poll_t signal_poll_{};
    int signal_fd_ = -1;
    DownloadTracker tracker_;
    GeoIp geoip_;
    std::map<RequestKey, DecodedRecord> in_flight_;        // last transfer record of running requests
    std::vector<std::unique_ptr<StorageThread>> storage_;  // one per store
    Batch batch_;                                          // what the next tick hands to the stores
    const uint64_t origin_;                                // names this run's batches
    uint64_t records_ = 0;
    uint64_t malformed_ = 0;
    uint64_t downloads_ = 0;
    bool stopping_ = false;
};

}  // namespace smp
