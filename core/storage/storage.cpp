#include "storage.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>

namespace smp {
namespace {
constexpr auto kRetryDelay = std::chrono::seconds(1);
// Batches stored in one call: the collector reads no further while
// kBatchesAhead are not stored, and a tick's downloads may add a few. So a
// store that keeps up never sends batches to the spool.
constexpr size_t kMaxMerged = 2 * kBatchesAhead;
// Rows a purge call deletes at most: a few milliseconds of the store's time
// (docs/tracking.md, "Retention", has the figures), so a batch that arrives
// meanwhile waits no longer than that.
constexpr uint32_t kPurgeRows = 2000;
// A steady clock: a day of the server's running, whatever the wall clock does.
constexpr auto kPurgeEvery = std::chrono::hours(24);

int64_t wall_clock_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}
}  // namespace

StorageThread::StorageThread(ModuleInstance& store, std::string spool_dir, metrics::StoreMetrics* metrics,
                             int64_t retention_us)
    : store_(store),
      name_(store.entry->module),
      metrics_(metrics),
      spool_(std::move(spool_dir)),
      retention_us_(SMP_MODULE_HOOK(store.api, purge) != nullptr ? retention_us : 0) {
    if (retention_us > 0 && retention_us_ == 0)
        spdlog::warn("[{}] tracking.retention is set but this store cannot purge: it keeps every row", name_);
    thread_ = std::thread([this] { run(); });
}

StorageThread::~StorageThread() { stop(); }

void StorageThread::submit(std::shared_ptr<const Batch> batch) {
    if (batch->empty()) return;
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(batch));
    }
    wake_.notify_one();
}

void StorageThread::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void StorageThread::fail(const char* doing, const char* error) {
    if (!failing_)
        spdlog::error("[{}] cannot {}: {}; spooling downloads to {} and trying again every second", name_, doing, error,
                      spool_.dir());
    failing_ = true;
    next_try_ = Clock::now() + kRetryDelay;
}

bool StorageThread::start() {
    if (started_) return true;
    std::array<char, 512> error{};
    int result = SMP_OK;
    store_.worker_state = store_.instance;
    if (auto init = SMP_MODULE_HOOK(store_.api, init_collector)) {
        try {
            result = init(store_.instance, &store_.worker_state, error.data(), error.size());
        } catch (...) {
            result = SMP_ERROR;
            std::snprintf(error.data(), error.size(), "threw an exception across the C boundary");
        }
    }
    if (result != SMP_OK) {
        fail("start the store", error.data());
        return false;
    }
    started_ = true;
    return true;
}

bool StorageThread::store(std::span<const Batch* const> batches) {
    if (!start()) return false;
    const smp_batch* view = view_.of(batches);
    std::array<char, 512> error{};
    int result = SMP_ERROR;
    try {
        result = SMP_MODULE_HOOK(store_.api, store)(store_.worker_state, view, error.data(), error.size());
    } catch (...) {
        std::snprintf(error.data(), error.size(), "threw an exception across the C boundary");
    }
    if (metrics_ != nullptr)
        metrics::add(result == SMP_OK ? metrics_->batches : metrics_->errors, result == SMP_OK ? batches.size() : 1);
    if (result == SMP_OK) {
        if (view->download_count > 0)
            spdlog::info("Save download(s) tracker in database: {} download(s), {} request(s)", view->download_count,
                         view->record_count);
        return true;
    }
    fail("store downloads", error.data());
    return false;
}

void StorageThread::drain_spool() {
    while (const Batch* batch = spool_.front()) {
        if (!store(*batch)) return;
        spool_.pop();
    }
    if (!spool_.empty()) {  // unreadable for now
        next_try_ = Clock::now() + kRetryDelay;
        return;
    }
    if (failing_) spdlog::info("[{}] store writable again: the spooled downloads are saved", name_);
    failing_ = false;
}

bool StorageThread::purge_step() {
    // A store that fails is left alone: its batches come first.
    if (retention_us_ <= 0 || !started_ || failing_ || !spool_.empty()) return false;
    const auto now = Clock::now();
    if (!purging_) {
        if (now < next_purge_) return false;
        purging_ = true;
        purge_started_ = now;
        purged_rows_ = 0;
    }
    std::array<char, 512> error{};
    uint32_t purged = 0;
    int result = SMP_ERROR;
    try {
        result = SMP_MODULE_HOOK(store_.api, purge)(store_.worker_state, wall_clock_us() - retention_us_, kPurgeRows,
                                                    &purged, error.data(), error.size());
    } catch (...) {
        std::snprintf(error.data(), error.size(), "threw an exception across the C boundary");
    }
    purged_rows_ += purged;
    if (metrics_ != nullptr) metrics::add(metrics_->purged_rows, purged);
    if (result == SMP_OK && purged >= kPurgeRows) return true;
    purging_ = false;
    next_purge_ = Clock::now() + kPurgeEvery;
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - purge_started_).count();
    constexpr int64_t kHourUs = int64_t{3600} * 1000 * 1000;
    const std::string age = retention_us_ % (24 * kHourUs) == 0
                                ? fmt::format("{} day(s)", retention_us_ / (24 * kHourUs))
                                : fmt::format("{} hour(s)", retention_us_ / kHourUs);
    if (result == SMP_OK)
        spdlog::info("[{}] retention: purged {} row(s) older than {} in {} ms", name_, purged_rows_, age, took);
    else
        spdlog::error("[{}] retention: cannot purge old rows ({} purged in {} ms): {}; trying again in a day", name_,
                      purged_rows_, took, error.data());
    return false;
}

void StorageThread::run() {
    start();
    if (!spool_.empty()) {
        spdlog::info("[{}] replaying the spool {} ({} bytes) left by an earlier run", name_, spool_.dir(),
                     spool_.bytes_on_disk());
        if (started_) drain_spool();
    }
    for (;;) {
        std::deque<std::shared_ptr<const Batch>> arrived;
        bool stopping = false;
        {
            std::unique_lock lock(mutex_);
            const auto ready = [this] { return stopping_ || !queue_.empty(); };
            // A purge under way goes on at once, after what arrived meanwhile.
            auto wake_at = spool_.empty() ? Clock::time_point::max() : next_try_;
            if (retention_us_ > 0 && started_) wake_at = std::min(wake_at, purging_ ? Clock::now() : next_purge_);
            if (wake_at == Clock::time_point::max())
                wake_.wait(lock, ready);
            else
                wake_.wait_until(lock, wake_at, ready);
            arrived.swap(queue_);
            stopping = stopping_;
        }
        // Nothing passes a spooled batch, and a failing store is left alone
        // until its next try. Batches that queued up while the store was
        // busy (or pacing itself) go in one call, per origin, a few at a
        // time; more than that means a store slower than the traffic, and
        // the rest waits on disk rather than in memory.
        for (size_t first = 0; first < arrived.size();) {
            std::vector<const Batch*> run;
            for (size_t i = first;
                 i < arrived.size() && run.size() < kMaxMerged && arrived[i]->origin == arrived[first]->origin; ++i)
                run.push_back(arrived[i].get());
            if (!spool_.empty() || Clock::now() < next_try_ || first > 0 || !store(run))
                for (const Batch* batch : run) spool_.push(*batch);
            // Stored, or in the spool's files (not only in its memory).
            if (spool_.batches_in_memory() == 0)
                durable_sequence_.store(run.back()->sequence, std::memory_order_release);
            first += run.size();
        }
        if (stopping) break;
        if (!spool_.empty() && Clock::now() >= next_try_) drain_spool();
        purge_step();
        if (metrics_ != nullptr)
            metrics_->spool_bytes.store(static_cast<int64_t>(spool_.bytes_on_disk()), std::memory_order_relaxed);
    }
    // Stopping: what is on disk waits for the next start (a slow store would
    // otherwise hold the stop for as long as its backlog takes); what only
    // memory holds gets one more try.
    if (spool_.batches_in_memory() > 0) drain_spool();
    if (spool_.batches_in_memory() > 0)
        spdlog::error("[{}] stopping with {} batch(es) that neither the store nor the spool {} took: they are lost",
                      name_, spool_.batches_in_memory(), spool_.dir());
    if (!spool_.empty())
        spdlog::warn("[{}] stopping with {} bytes of downloads in the spool {}: they are stored at the next start",
                     name_, spool_.bytes_on_disk(), spool_.dir());
    if (auto exit = SMP_MODULE_HOOK(store_.api, exit_collector); exit && started_) exit(store_.worker_state);
}

}  // namespace smp
