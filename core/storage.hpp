// The collector's storage thread: batches of finished requests and downloads
// go to every storage plugin, one call at a time, off the event loop. A store
// that fails keeps its batch, which is offered again a second later, in order.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "download_tracker.hpp"
#include "geoip.hpp"
#include "loader.hpp"
#include "record_codec.hpp"

namespace smp {

struct StoredDownload {
    LogicalDownload download;
    GeoInfo geo;
};

struct Batch {
    std::vector<DecodedRecord> records;
    std::vector<StoredDownload> downloads;
    bool empty() const { return records.empty() && downloads.empty(); }
};

class StorageThread {
   public:
    // `stores`: plugins with a store hook, their collector state already made.
    explicit StorageThread(std::vector<ModuleInstance*> stores);
    ~StorageThread();  // stops and joins: every queued batch is offered first
    StorageThread(const StorageThread&) = delete;
    StorageThread& operator=(const StorageThread&) = delete;

    void submit(Batch batch);
    // Stops after the queued batches; a store still failing then gives up
    // after a few tries and logs what was not stored.
    void stop();

   private:
    void run();
    bool store(const Batch& batch);
    bool stop_requested();

    std::vector<ModuleInstance*> stores_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Batch> queue_;
    bool stopping_ = false;
    bool failing_ = false;  // logged once per outage
    std::thread thread_;
};

}  // namespace smp
