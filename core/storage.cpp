#include "storage.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <chrono>

namespace smp {
namespace {

constexpr auto kRetryDelay = std::chrono::seconds(1);
constexpr int kTriesAtStop = 3;

smp_download to_c(const StoredDownload& stored) {
    const LogicalDownload& d = stored.download;
    const GeoInfo& geo = stored.geo;
    smp_download out{};
    out.size = sizeof out;
    out.id = d.id;
    out.client_ip = d.client_ip.c_str();
    out.user_agent = d.user_agent.c_str();
    out.path = d.path.c_str();
    out.etag = d.etag.c_str();
    out.file_size = d.file_size;
    out.distinct_bytes = d.distinct_bytes();
    out.bytes_sent = d.bytes_sent;
    out.wasted_bytes = d.wasted_bytes();
    out.completed = d.completed() ? 1 : 0;
    out.requests = d.requests;
    out.resumes = d.resumes;
    out.first_us = d.first_us;
    out.last_us = d.last_us;
    out.active_us = d.active_us();
    out.reason = d.reason();
    // IntervalSet::Interval and smp_interval are both {first, last} of uint64_t.
    static_assert(sizeof(IntervalSet::Interval) == sizeof(smp_interval));
    out.delivered = reinterpret_cast<const smp_interval*>(d.delivered.intervals().data());
    out.delivered_count = d.delivered.intervals().size();
    out.country = geo.country.empty() ? nullptr : geo.country.c_str();
    out.city = geo.city.empty() ? nullptr : geo.city.c_str();
    out.has_location = geo.has_location ? 1 : 0;
    out.latitude = geo.latitude;
    out.longitude = geo.longitude;
    out.asn = geo.asn;
    out.organisation = geo.organisation.empty() ? nullptr : geo.organisation.c_str();
    return out;
}

}  // namespace

StorageThread::StorageThread(std::vector<ModuleInstance*> stores) : stores_(std::move(stores)) {
    thread_ = std::thread([this] { run(); });
}

StorageThread::~StorageThread() { stop(); }

void StorageThread::submit(Batch batch) {
    if (batch.empty()) return;
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(batch));
    }
    wake_.notify_one();
}

void StorageThread::stop() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_ && !thread_.joinable()) return;
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
}

bool StorageThread::stop_requested() {
    std::lock_guard lock(mutex_);
    return stopping_;
}

bool StorageThread::store(const Batch& batch) {
    std::vector<smp_record> records;
    records.reserve(batch.records.size());
    for (const auto& record : batch.records) records.push_back(record.record());
    std::vector<smp_download> downloads;
    downloads.reserve(batch.downloads.size());
    for (const auto& download : batch.downloads) downloads.push_back(to_c(download));
    const smp_batch c_batch{sizeof(smp_batch), records.data(), records.size(), downloads.data(), downloads.size()};
    bool stored = true;
    for (auto* module : stores_) {
        std::array<char, 512> error{};
        int result = SMP_ERROR;
        try {
            result = SMP_MODULE_HOOK(module->api, store)(module->worker_state, &c_batch, error.data(), error.size());
        } catch (...) {
            std::snprintf(error.data(), error.size(), "threw an exception across the C boundary");
        }
        if (result == SMP_OK) continue;
        stored = false;
        if (!failing_)
            spdlog::error("[{}] cannot store downloads: {}; keeping them and trying again every second",
                          module->entry->module, error.data());
    }
    return stored;
}

void StorageThread::run() {
    for (;;) {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and all stored
        Batch& batch = queue_.front();
        lock.unlock();

        int tries_while_stopping = 0;
        bool stored = store(batch);
        while (!stored) {
            failing_ = true;
            if (stop_requested() && ++tries_while_stopping >= kTriesAtStop) break;
            std::this_thread::sleep_for(kRetryDelay);
            stored = store(batch);
        }
        if (stored && failing_) {
            failing_ = false;
            spdlog::info("Store writable again: the kept downloads are saved");
        }
        if (!stored)
            spdlog::error("stopping with {} request(s) and {} download(s) not stored", batch.records.size(),
                          batch.downloads.size());
        else if (!batch.downloads.empty())
            spdlog::info("Save download(s) tracker in database: {} download(s), {} request(s)", batch.downloads.size(),
                         batch.records.size());
        lock.lock();
        queue_.pop_front();
    }
}

}  // namespace smp
