// The sqlite store loaded as the stats collector loads it (dlopen, then
// init_master, init_collector, store, exit_collector, exit_master), and
// batches shaped like real traffic: for sqlite_test.cpp and the benchmark
// tests/bench/store_rate.cpp. It goes through the module's C entry, so what
// it measures and checks is the shared object the server runs.
#pragma once

#include <dlfcn.h>

#include <cstdio>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

#include "smp_module.h"

namespace smp_sqlite_harness {

inline void log_to_stderr(smp_log_level level, const char* module, const char* message) {
    if (level >= SMP_LOG_WARN) std::fprintf(stderr, "[%s] %s\n", module, message);
}

// One instance of the module with its collector state: what a StorageThread holds.
class LoadedStore {
   public:
    LoadedStore(const std::string& module_path, const std::string& database_path) {
        handle_ = dlopen(module_path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle_ == nullptr) throw std::runtime_error(std::string("dlopen: ") + dlerror());
        const auto entry = reinterpret_cast<smp_module_entry_fn>(dlsym(handle_, SMP_MODULE_ENTRY_SYMBOL));
        if (entry == nullptr) throw std::runtime_error(module_path + " has no " SMP_MODULE_ENTRY_SYMBOL);
        api_ = entry();
        core_.size = sizeof core_;
        core_.log = log_to_stderr;
        smp_config_value path{};
        path.present = 1;
        path.string = database_path.c_str();
        char error[512] = "";
        if (api_->init_master(&core_, &path, &instance_, error, sizeof error) != SMP_OK)
            throw std::runtime_error(std::string("init_master: ") + error);
        start_collector();
    }
    LoadedStore(const LoadedStore&) = delete;
    LoadedStore& operator=(const LoadedStore&) = delete;
    ~LoadedStore() {
        stop_collector();
        if (instance_ != nullptr) api_->exit_master(instance_);
        // RTLD_NODELETE is not asked for, but SQLite keeps no thread-local
        // state that would outlive the unload.
        dlclose(handle_);
    }

    // SMP_OK, or SMP_ERROR with the module's sentence in `error`.
    int store(const smp_batch& batch, std::string* error = nullptr) {
        char message[512] = "";
        const int result = api_->store(collector_state_, &batch, message, sizeof message);
        if (error != nullptr) *error = message;
        return result;
    }

    // One call of the purge hook (tracking.retention); SMP_OK or SMP_ERROR.
    int purge(int64_t before_us, uint32_t max_rows, uint32_t& purged) {
        char message[512] = "";
        return api_->purge(collector_state_, before_us, max_rows, &purged, message, sizeof message);
    }

    // The rows of `report` as `smprotocol stats` asks for it, each row's cells
    // joined by '|' ("-" for no value); throws with the module's sentence.
    std::vector<std::string> report(const char* report, int64_t since_us = 0, int64_t until_us = 0,
                                    const char* path = nullptr, const char* bucket = nullptr, int include_bots = 0) {
        smp_query query{};
        query.include_bots = include_bots;
        query.size = sizeof query;
        query.report = report;
        query.since_us = since_us;
        query.until_us = until_us;
        query.path = path;
        query.bucket = bucket;
        query.include_bots = include_bots;
        smp_table* table = nullptr;
        char error[512] = "";
        if (api_->query(instance_, &query, &table, error, sizeof error) != SMP_OK)
            throw std::runtime_error(std::string("query: ") + error);
        std::vector<std::string> rows;
        for (size_t row = 0; row < table->row_count; ++row) {
            std::string text;
            for (size_t column = 0; column < table->column_count; ++column) {
                const char* cell = table->cells[row * table->column_count + column];
                text += std::string(column > 0 ? "|" : "") + (cell != nullptr ? cell : "-");
            }
            rows.push_back(std::move(text));
        }
        api_->free_table(instance_, table);
        return rows;
    }

    // What a collector restart does: a new collector state on the same database.
    void restart_collector() {
        stop_collector();
        start_collector();
    }

   private:
    void start_collector() {
        char error[512] = "";
        if (api_->init_collector(instance_, &collector_state_, error, sizeof error) != SMP_OK)
            throw std::runtime_error(std::string("init_collector: ") + error);
    }
    void stop_collector() {
        if (collector_state_ != nullptr) api_->exit_collector(collector_state_);
        collector_state_ = nullptr;
    }

    void* handle_ = nullptr;
    const smp_module* api_ = nullptr;
    smp_core_api core_{};
    void* instance_ = nullptr;
    void* collector_state_ = nullptr;
};

// A batch that owns what its smp_batch points at.
struct TrafficBatch {
    std::deque<std::string> strings;  // a deque: growing it moves no string the rows point into
    std::deque<smp_interval> intervals;
    std::vector<smp_record> records;
    std::vector<smp_download> downloads;
    smp_batch batch{};

    const char* keep(std::string text) { return strings.emplace_back(std::move(text)).c_str(); }
    const smp_batch& view() {
        batch.size = sizeof batch;
        batch.records = records.data();
        batch.record_count = records.size();
        batch.downloads = downloads.data();
        batch.download_count = downloads.size();
        return batch;
    }
};

// A 100-byte browser User-Agent, as most downloads carry.
inline const char* const kUserAgent =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.3";

// The small-file traffic of one worker: request `n` (0, 1, ...) is a GET of
// one of a thousand 4 KiB files by one of 250 clients, ten requests per
// keep-alive connection, every fourth one a Range of its first 100 bytes. Its
// place in the worker's log (log `log_number`) is index n + 1.
inline smp_record traffic_record(TrafficBatch& batch, uint64_t n, uint64_t log_number = 1) {
    static constexpr int64_t kStartUs = 1'700'000'000'000'000;
    const bool ranged = n % 4 == 3;
    smp_record r{};
    r.size = sizeof r;
    r.connection_id = n / 10 + 1;
    r.request_id = n % 10 + 1;
    r.worker_id = 1;
    r.module = "http_download";
    r.node = "web-1";
    r.start_us = kStartUs + static_cast<int64_t>(n) * 10;
    r.end_us = r.start_us + 180;
    r.client_ip = batch.keep("198.51.100." + std::to_string(n % 250));
    r.client_port = static_cast<uint16_t>(32768 + n / 10 % 28000);
    r.method = "GET";
    r.path = batch.keep("/files/f" + std::to_string(n % 1000) + ".bin");
    r.target = r.path;
    r.protocol = "HTTP/1.1";
    r.user_agent = kUserAgent;
    r.range = ranged ? "bytes=0-99" : nullptr;
    r.etag = "\"5f3a-1000\"";
    r.file_size = 4096;
    r.status = ranged ? 206 : 200;
    r.intervals = &batch.intervals.emplace_back(smp_interval{0, ranged ? 99u : 4095u});
    r.interval_count = 1;
    r.header_bytes = 250;
    r.body_bytes = ranged ? 100 : 4096;
    r.reason = SMP_END_COMPLETED;
    r.received_bytes = 190;
    r.log_number = log_number;
    r.log_index = n + 1;
    return r;
}

// The download that request `record` is the whole of, as the collector
// hands it over: open (`finished` 0) in the batch of its request, finished
// in a later one.
inline smp_download traffic_download(const smp_record& record, uint64_t id, bool finished) {
    smp_download d{};
    d.size = sizeof d;
    d.id = id;
    d.client_ip = record.client_ip;
    d.user_agent = record.user_agent;
    d.path = record.path;
    d.etag = record.etag;
    d.file_size = static_cast<uint64_t>(record.file_size);
    d.distinct_bytes = record.body_bytes;
    d.bytes_sent = record.body_bytes;
    d.completed = record.body_bytes == d.file_size;
    d.requests = 1;
    d.first_us = record.start_us;
    d.last_us = record.end_us;
    d.active_us = record.end_us - record.start_us;
    d.reason = d.completed ? SMP_END_COMPLETED : SMP_END_INCOMPLETE;
    d.delivered = record.intervals;
    d.delivered_count = record.interval_count;
    d.country = "DE";
    d.city = "Berlin";
    d.has_location = 1;
    d.latitude = 52.52;
    d.longitude = 13.40;
    d.asn = 3320;
    d.organisation = "Deutsche Telekom AG";
    d.finished = finished;
    d.node = record.node;
    return d;
}

// Requests first .. first + count - 1 and their downloads: with
// `downloads_per_request` 1, each request's own download, open; with 2, also
// the finished downloads of the `count` requests before `first` (as the batch
// of a second later hands them over); with 0, no downloads.
inline void add_traffic(TrafficBatch& batch, uint64_t first, size_t count, size_t downloads_per_request = 1) {
    if (downloads_per_request >= 2 && first >= count)
        for (uint64_t n = first - count; n < first; ++n)
            batch.downloads.push_back(traffic_download(traffic_record(batch, n), n + 1, true));
    for (uint64_t n = first; n < first + count; ++n) {
        batch.records.push_back(traffic_record(batch, n));
        if (downloads_per_request >= 1) batch.downloads.push_back(traffic_download(batch.records.back(), n + 1, false));
    }
}

}  // namespace smp_sqlite_harness
