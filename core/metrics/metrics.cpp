#include "metrics.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace smp::metrics {
namespace {

uint64_t load(const Counter& counter) { return counter.load(std::memory_order_relaxed); }
int64_t load(const Gauge& gauge) { return gauge.load(std::memory_order_relaxed); }

// Prometheus's text format: a family's HELP and TYPE once, then its samples.
class Text {
   public:
    void family(const char* name, const char* type, const char* help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    // `labels` is written as given: `module="x",reason="y"` (already escaped).
    void sample(std::string_view name, std::string_view labels, uint64_t value) { line(name, labels, value); }
    void sample(std::string_view name, std::string_view labels, int64_t value) { line(name, labels, value); }
    void sample(std::string_view name, std::string_view labels, double value) {
        char text[32];
        std::snprintf(text, sizeof text, "%.6f", value);
        start(name, labels);
        out_ += text;
        out_ += '\n';
    }
    void histogram(const char* name, const char* help, const Histogram* const* parts, size_t count) {
        family(name, "histogram", help);
        const std::string bucket = std::string(name) + "_bucket";
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= kBucketCount; ++b) {
            for (size_t i = 0; i < count; ++i) cumulative += load(parts[i]->buckets[b]);
            char le[40];
            if (b < kBucketCount)
                std::snprintf(le, sizeof le, "le=\"%g\"", kDurationBuckets[b]);
            else
                std::snprintf(le, sizeof le, "le=\"+Inf\"");
            sample(bucket, le, cumulative);
        }
        uint64_t sum_us = 0;
        uint64_t total = 0;
        for (size_t i = 0; i < count; ++i) {
            sum_us += load(parts[i]->sum_us);
            total += load(parts[i]->count);
        }
        sample(std::string(name) + "_sum", "", static_cast<double>(sum_us) / 1e6);
        sample(std::string(name) + "_count", "", total);
    }
    std::string take() { return std::move(out_); }

   private:
    void start(std::string_view name, std::string_view labels) {
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            out_ += labels;
            out_ += '}';
        }
        out_ += ' ';
    }
    template <typename Number>
    void line(std::string_view name, std::string_view labels, Number value) {
        start(name, labels);
        out_ += std::to_string(value);
        out_ += '\n';
    }
    std::string out_;
};

// A label value: names come from the configuration (module names are file
// names), so quote, backslash and newline are escaped as the format says.
std::string label(const char* key, std::string_view value) {
    std::string out = key;
    out += "=\"";
    for (char c : value) {
        if (c == '"' || c == '\\') out += '\\';
        out += c == '\n' ? 'n' : c;
    }
    out += '"';
    return out;
}

constexpr const char* kStatusClassNames[kStatusClasses] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

}  // namespace

size_t LiveDownloads::read(LiveDownload* out) const {
    // A writer is in it for microseconds once a second: a few tries suffice,
    // and a reader that never gets a steady copy shows nothing this time.
    for (int attempt = 0; attempt < 100; ++attempt) {
        const uint64_t before = sequence.load(std::memory_order_acquire);
        if (before % 2 != 0) continue;
        const size_t n = std::min<size_t>(count, kRows);
        if (n > 0) std::memcpy(static_cast<void*>(out), rows, n * sizeof(LiveDownload));
        std::atomic_thread_fence(std::memory_order_acquire);
        if (sequence.load(std::memory_order_relaxed) == before) return n;
    }
    return 0;
}

void LiveDownloads::write(const LiveDownload* from, size_t n) {
    sequence.fetch_add(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    count = static_cast<uint32_t>(std::min(n, kRows));
    if (count > 0) std::memcpy(static_cast<void*>(rows), from, count * sizeof(LiveDownload));
    sequence.fetch_add(1, std::memory_order_release);
}

void Histogram::observe(int64_t duration_us) {
    if (duration_us < 0) duration_us = 0;
    const double seconds = static_cast<double>(duration_us) / 1e6;
    size_t b = 0;
    while (b < kBucketCount && seconds > kDurationBuckets[b]) ++b;
    add(buckets[b]);
    add(count);
    add(sum_us, static_cast<uint64_t>(duration_us));
}

Board::Board() {
    void* memory = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::runtime_error("cannot map the metrics board");
    // Anonymous shared pages are zero: every counter starts at 0, and only
    // the pages a seat writes take memory.
    shared_ = static_cast<Shared*>(memory);
}

Board::~Board() { munmap(shared_, sizeof(Shared)); }

size_t Board::place(char (&names)[kNames][kNameSize], const std::string& name) {
    for (size_t i = 0; i < kNames; ++i) {
        if (std::strncmp(names[i], name.c_str(), kNameSize - 1) == 0) return i;
        if (names[i][0] == '\0') {
            std::snprintf(names[i], kNameSize, "%s", i + 1 < kNames ? name.c_str() : "other");
            return i;
        }
    }
    return kNames - 1;
}

size_t Board::find(const char (&names)[kNames][kNameSize], const char* name) {
    if (name != nullptr)
        for (size_t i = 0; i < kNames && names[i][0] != '\0'; ++i)
            if (std::strncmp(names[i], name, kNameSize - 1) == 0) return i;
    return kNames - 1;
}

std::vector<LiveDownload> Board::live_downloads() const {
    std::vector<LiveDownload> all;
    std::vector<LiveDownload> shard(LiveDownloads::kRows);
    for (const auto& collector : shared_->collectors) {
        const size_t n = collector.live.read(shard.data());
        all.insert(all.end(), shard.begin(), shard.begin() + static_cast<std::ptrdiff_t>(n));
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.last_us > b.last_us; });
    if (all.size() > LiveDownloads::kRows) all.resize(LiveDownloads::kRows);
    return all;
}

std::unique_ptr<smp_report::OwnedTable> live_downloads_table(const std::vector<LiveDownload>& rows,
                                                             const smp_query& query) {
    using smp_report::Cell;
    auto table = smp_report::make_table("in_progress");
    for (const LiveDownload& row : rows) {
        if (query.path != nullptr && std::strcmp(query.path, row.path) != 0) continue;
        if (query.since_us != 0 && row.started_us < query.since_us) continue;
        const bool whole = row.file_size > 0 && row.bytes >= row.file_size;
        table->add_row(
            {row.id != 0 ? Cell(std::to_string(row.id)) : Cell(), smp_report::utc_time(row.started_us),
             std::string(row.path), std::string(row.client_ip), row.country[0] != '\0' ? Cell(row.country) : Cell(),
             std::to_string(row.file_size), std::to_string(row.bytes),
             smp_report::coverage(static_cast<int64_t>(row.bytes), static_cast<int64_t>(row.file_size), whole),
             row.speed_bps > 0 ? Cell(smp_report::fixed(row.speed_bps, 0)) : Cell(), std::to_string(row.requests),
             smp_report::utc_time(row.last_us)});
    }
    return table;
}

void Board::seat_emptied(size_t seat) {
    for (auto& phase : shared_->workers[seat].phases) phase.store(0, std::memory_order_relaxed);
}

void Board::seat_used(size_t seat) {
    if (seat + 1 > shared_->seats_used.load(std::memory_order_relaxed))
        shared_->seats_used.store(seat + 1, std::memory_order_relaxed);
}

Totals Board::totals() const {
    const size_t seats = std::min<size_t>(shared_->seats_used.load(std::memory_order_relaxed), kSeats);
    Totals totals;
    for (size_t s = 0; s < seats; ++s) {
        const WorkerMetrics& worker = shared_->workers[s];
        for (const auto& by_class : worker.requests)
            for (const auto& by_reason : by_class)
                for (const Counter& counter : by_reason) totals.requests += load(counter);
        for (const Counter& counter : worker.sent_bytes) totals.sent_bytes += load(counter);
    }
    return totals;
}

std::string Board::prometheus_text(int64_t connections, int64_t downloads_in_progress) const {
    const size_t seats = std::min<size_t>(shared_->seats_used.load(std::memory_order_relaxed), kSeats);
    const WorkerMetrics* workers = shared_->workers;
    Text text;

    text.family("smprotocol_requests_total", "counter",
                "Requests ended, by protocol module, HTTP status class (none: no response) and end reason.");
    for (size_t m = 0; m < kNames && shared_->modules[m][0] != '\0'; ++m)
        for (size_t c = 0; c < kStatusClasses; ++c)
            for (size_t r = 0; r < kReasons; ++r) {
                uint64_t sum = 0;
                for (size_t s = 0; s < seats; ++s) sum += load(workers[s].requests[m][c][r]);
                if (sum == 0) continue;
                text.sample("smprotocol_requests_total",
                            label("module", shared_->modules[m]) + "," + label("status_class", kStatusClassNames[c]) +
                                "," + label("reason", smp_end_reason_name(static_cast<smp_end_reason>(r))),
                            sum);
            }
    const auto per_module = [&](const char* name, const char* help, Counter(WorkerMetrics::*field)[kNames]) {
        text.family(name, "counter", help);
        for (size_t m = 0; m < kNames && shared_->modules[m][0] != '\0'; ++m) {
            uint64_t sum = 0;
            for (size_t s = 0; s < seats; ++s) sum += load((workers[s].*field)[m]);
            text.sample(name, label("module", shared_->modules[m]), sum);
        }
    };
    per_module("smprotocol_sent_bytes_total", "Bytes sent to clients: response heads and bodies.",
               &WorkerMetrics::sent_bytes);
    per_module("smprotocol_received_bytes_total", "Bytes received from clients: request heads and bodies.",
               &WorkerMetrics::received_bytes);

    std::vector<const Histogram*> parts;
    for (size_t s = 0; s < seats; ++s) parts.push_back(&workers[s].request_duration);
    text.histogram("smprotocol_request_duration_seconds",
                   "Time from a request's first byte to its last byte sent, of the requests ended.", parts.data(),
                   parts.size());

    text.family("smprotocol_connections_open", "gauge", "Client connections open now.");
    text.sample("smprotocol_connections_open", "", connections);
    text.family("smprotocol_connections", "gauge",
                "Client connections open now by what they are doing: reading a request, writing a response, or "
                "idle between requests.");
    constexpr const char* kPhaseNames[kPhases] = {"", "reading", "writing", "idle"};
    for (size_t p = 1; p < kPhases; ++p) {
        int64_t sum = 0;
        for (size_t s = 0; s < seats; ++s) sum += load(workers[s].phases[p]);
        text.sample("smprotocol_connections", label("state", kPhaseNames[p]), sum);
    }
    text.family("smprotocol_downloads_in_progress", "gauge",
                "File responses being sent now that have run for more than a second.");
    text.sample("smprotocol_downloads_in_progress", "", downloads_in_progress);

    text.family("smprotocol_plugin_errors_total", "counter",
                "Calls of a plugin to its server that failed (memcached down, a reply it could not read).");
    for (size_t m = 0; m < kNames && shared_->plugins[m][0] != '\0'; ++m) {
        uint64_t sum = 0;
        for (size_t s = 0; s < seats; ++s) sum += load(workers[s].plugin_errors[m]);
        text.sample("smprotocol_plugin_errors_total", label("plugin", shared_->plugins[m]), sum);
    }

    // The stats collectors: summed over the shards.
    const auto collectors = [&](auto value) {
        decltype(value(shared_->collectors[0])) sum{};
        for (const auto& collector : shared_->collectors) sum += value(collector);
        return sum;
    };
    text.family("smprotocol_collector_records_total", "counter", "Request records the stats collector merged.");
    text.sample("smprotocol_collector_records_total", "",
                collectors([](const CollectorMetrics& c) { return load(c.records); }));
    text.family("smprotocol_collector_backlog_bytes", "gauge",
                "Bytes of records in the workers' tracking logs that the stats collector has not read yet.");
    text.sample("smprotocol_collector_backlog_bytes", "",
                collectors([](const CollectorMetrics& c) { return load(c.backlog_bytes); }));
    text.family("smprotocol_collector_lag_seconds", "gauge",
                "How far behind the stats collector reads: the age of the last record it read while more were "
                "waiting; 0 when it has read everything.");
    int64_t lag_us = 0;
    for (const auto& collector : shared_->collectors) lag_us = std::max(lag_us, load(collector.lag_us));
    text.sample("smprotocol_collector_lag_seconds", "", static_cast<double>(lag_us) / 1e6);
    text.family("smprotocol_downloads_open", "gauge",
                "Logical downloads the stats collector holds open: more requests may still join them.");
    text.sample("smprotocol_downloads_open", "",
                collectors([](const CollectorMetrics& c) { return load(c.downloads_open); }));
    text.family("smprotocol_downloads_finished_total", "counter",
                "Logical downloads that ended (idle for the idle window, or the server stopping), by outcome.");
    for (size_t r = 0; r < kReasons; ++r) {
        const uint64_t sum = collectors([r](const CollectorMetrics& c) { return load(c.downloads_finished[r]); });
        if (sum > 0)
            text.sample("smprotocol_downloads_finished_total",
                        label("outcome", smp_end_reason_name(static_cast<smp_end_reason>(r))), sum);
    }
    parts.clear();
    for (const auto& collector : shared_->collectors) parts.push_back(&collector.download_duration);
    text.histogram("smprotocol_download_duration_seconds",
                   "Wall time of the logical downloads that ended: first request to last byte.", parts.data(),
                   parts.size());

    const auto per_store = [&](const char* name, const char* type, const char* help, auto value) {
        text.family(name, type, help);
        for (size_t i = 0; i < kNames && shared_->stores[i][0] != '\0'; ++i)
            text.sample(name, label("store", shared_->stores[i]),
                        collectors([&](const CollectorMetrics& c) { return value(c.stores[i]); }));
    };
    per_store("smprotocol_store_batches_total", "counter", "Batches a store took.",
              [](const StoreMetrics& s) { return load(s.batches); });
    per_store("smprotocol_store_errors_total", "counter", "Store calls that failed: the batch went to the spool.",
              [](const StoreMetrics& s) { return load(s.errors); });
    per_store("smprotocol_store_spool_bytes", "gauge", "Bytes in a store's spool on disk, waiting to be stored.",
              [](const StoreMetrics& s) { return load(s.spool_bytes); });
    per_store("smprotocol_store_purged_rows_total", "counter",
              "Requests and downloads a store deleted as older than tracking.retention.",
              [](const StoreMetrics& s) { return load(s.purged_rows); });
    return text.take();
}

}  // namespace smp::metrics
