// The collector's storage: one thread per store, each with its own queue and
// spool, so that a store that fails or is slow holds back no other and never
// the collector's event loop. A batch a store refuses goes to its spool on
// disk, and every later batch behind it; the spool is offered again every
// second, in order, and at the next start when the server stopped first.
// A store that cannot start (its database unreachable) is treated the same:
// its start is tried again every second, its batches spooled meanwhile.
// With a retention, the same thread purges the store's old rows at start and
// once a day, a small batch of rows at a time with the batches that arrived
// stored in between, so tracking never waits long behind a purge.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "batch.hpp"
#include "loader.hpp"
#include "metrics.hpp"
#include "spool.hpp"

namespace smp {

class StorageThread {
   public:
    // `store`: a plugin with a store hook; its init_collector and
    // exit_collector run on this thread. `metrics`: where it counts its
    // batches, failures and spool (nullptr: nowhere). `retention_us`:
    // tracking.retention (0: keep everything, never purge).
    StorageThread(ModuleInstance& store, std::string spool_dir, metrics::StoreMetrics* metrics = nullptr,
                  int64_t retention_us = 0);
    ~StorageThread();  // stops and joins
    StorageThread(const StorageThread&) = delete;
    StorageThread& operator=(const StorageThread&) = delete;

    void submit(std::shared_ptr<const Batch> batch);
    // The sequence of the last batch of this collector run that the store
    // has, or that waits in the spool on disk: it survives a crash.
    uint64_t durable_sequence() const { return durable_sequence_.load(std::memory_order_acquire); }
    // Stores or spools every submitted batch, tries the spool once more, and
    // returns; what the store did not take stays in the spool for the next start.
    void stop();

   private:
    using Clock = std::chrono::steady_clock;
    void run();
    bool start();  // init_collector; false: failing until next_try_
    // Consecutive batches of one origin, in one call; false: failing until next_try_.
    bool store(std::span<const Batch* const> batches);
    bool store(const Batch& batch) { return store(std::span<const Batch* const>(std::array{&batch})); }
    void fail(const char* doing, const char* error);
    void drain_spool();
    // One call of the store's purge hook when a purge is due; true while the
    // purge has more rows to delete.
    bool purge_step();

    ModuleInstance& store_;
    const std::string name_;
    metrics::StoreMetrics* metrics_;
    Spool spool_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::shared_ptr<const Batch>> queue_;
    bool stopping_ = false;
    bool started_ = false;  // init_collector succeeded
    bool failing_ = false;  // logged once per outage
    std::atomic<uint64_t> durable_sequence_{0};
    Clock::time_point next_try_{};
    // The purge: due at start, then a day after each one finished (or failed).
    const int64_t retention_us_;
    Clock::time_point next_purge_{};
    Clock::time_point purge_started_{};
    uint64_t purged_rows_ = 0;  // by the purge under way
    bool purging_ = false;      // a purge is under way
    BatchView view_;            // what the store is given, on this thread
    std::thread thread_;
};

}  // namespace smp
