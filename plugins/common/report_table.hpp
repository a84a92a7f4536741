// The tables of `smprotocol stats`, shared by every store that answers them
// (sqlite, mongodb), so that the reports are the same whichever store holds
// the data: one set of columns per report, the same number formats, the same
// percentile rule. Header-only: each store module compiles its own copy.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "smp_module.h"

namespace smp_report {

using Cell = std::optional<std::string>;  // empty: no value (JSON null)

// smp_table.numeric's values: what a column's cells are (ABI 1.10: booleans,
// whose cells are "0" or "1").
enum ColumnKind : int { kText = 0, kNumber = 1, kBoolean = 2 };

struct Column {
    const char* name;  // also the JSON key
    ColumnKind kind;
};

// A table a store owns until free_table.
struct OwnedTable {
    smp_table table{};
    std::vector<std::string> names;
    std::vector<const char*> name_pointers;
    std::vector<int> numeric;
    std::vector<Cell> values;
    std::vector<const char*> cell_pointers;

    explicit OwnedTable(std::initializer_list<Column> columns) {
        for (const auto& [name, kind] : columns) {
            names.emplace_back(name);
            numeric.push_back(kind);
        }
    }
    // A row of another width would shift every cell after it (and print
    // invalid JSON): refused, and the store's query fails saying so.
    void add_row(std::vector<Cell> row) {
        if (row.size() != names.size())
            throw std::logic_error("a row of " + std::to_string(row.size()) + " cells in a table of " +
                                   std::to_string(names.size()) + " columns");
        for (auto& cell : row) values.push_back(std::move(cell));
    }
    smp_table* finish() {
        for (const auto& name : names) name_pointers.push_back(name.c_str());
        for (const auto& value : values) cell_pointers.push_back(value ? value->c_str() : nullptr);
        table.size = sizeof table;
        table.column_count = names.size();
        table.columns = name_pointers.data();
        table.numeric = numeric.data();
        table.row_count = names.empty() ? 0 : values.size() / names.size();
        table.cells = cell_pointers.data();
        return &table;
    }
};

// The empty table of `report`, with its columns; nullptr for no such report.
inline std::unique_ptr<OwnedTable> make_table(std::string_view report) {
    const auto table = [](std::initializer_list<Column> columns) { return std::make_unique<OwnedTable>(columns); };
    if (report == "summary")
        return table({{"downloads", kNumber},
                      {"completed", kNumber},
                      {"completion_rate", kNumber},
                      {"bytes", kNumber},
                      {"distinct_clients", kNumber},
                      {"median_duration_s", kNumber},
                      {"p95_duration_s", kNumber}});
    if (report == "files")
        return table({{"path", kText},
                      {"downloads", kNumber},
                      {"completed", kNumber},
                      {"bytes", kNumber},
                      {"median_duration_s", kNumber}});
    if (report == "countries")
        return table({{"country", kText}, {"downloads", kNumber}, {"completed", kNumber}, {"bytes", kNumber}});
    if (report == "reasons") return table({{"reason", kText}, {"requests", kNumber}, {"downloads", kNumber}});
    if (report == "downloads")
        return table({{"id", kNumber},
                      {"started", kText},
                      {"path", kText},
                      {"client_ip", kText},
                      {"user_agent", kText},
                      {"country", kText},
                      {"asn", kNumber},
                      {"coverage", kNumber},
                      {"completed", kBoolean},
                      {"requests", kNumber},
                      {"resumes", kNumber},
                      {"duration_s", kNumber},
                      {"active_s", kNumber},
                      {"reason", kText},
                      {"finished", kBoolean},
                      {"nodes", kText}});  // the nodes that served it, by name, joined by ","
    if (report == "tls")
        return table({{"tls_version", kText}, {"requests", kNumber}, {"percent", kNumber}, {"bytes_sent", kNumber}});
    if (report == "timeseries")
        return table({{"time", kText}, {"downloads", kNumber}, {"completed", kNumber}, {"bytes", kNumber}});
    if (report == "daily")
        return table(
            {{"day", kText}, {"path", kText}, {"downloads", kNumber}, {"completed", kNumber}, {"bytes", kNumber}});
    if (report == "in_progress")
        return table({{"id", kNumber},
                      {"started", kText},
                      {"path", kText},
                      {"client_ip", kText},
                      {"country", kText},
                      {"file_size", kNumber},
                      {"bytes", kNumber},
                      {"coverage", kNumber},
                      {"speed_bps", kNumber},
                      {"requests", kNumber},
                      {"last_seen", kText}});
    if (report == "clients")
        return table({{"client_class", kText},
                      {"rank", kNumber},
                      {"user_agent", kText},
                      {"downloads", kNumber},
                      {"completed", kNumber},
                      {"bytes", kNumber},
                      {"distinct_clients", kNumber}});
    return nullptr;
}

// The width of a `timeseries` row in microseconds, for the query's bucket:
// "minute", "hour" or "day" (NULL, or a query older than ABI 1.10: "hour");
// empty for any other name. A UTC day is always 86400 s of Unix time.
inline std::optional<int64_t> bucket_width_us(const char* bucket) {
    const std::string_view name = bucket != nullptr ? bucket : "hour";
    if (name == "minute") return int64_t{60'000'000};
    if (name == "hour") return int64_t{3'600'000'000};
    if (name == "day") return int64_t{86'400'000'000};
    return std::nullopt;
}
inline const char* query_bucket(const smp_query& query) { return SMP_HAS(&query, bucket) ? query.bucket : nullptr; }

// The empty table of `query`'s report, or nullptr with the sentence in
// `error`: what every store checks before it reads.
inline std::unique_ptr<OwnedTable> make_table(const smp_query& query, char* error, size_t error_size) {
    auto table = make_table(query.report);
    if (!table) {
        std::snprintf(error, error_size, "no report '%s'", query.report);
    } else if (std::string_view(query.report) == "timeseries" && !bucket_width_us(query_bucket(query))) {
        std::snprintf(error, error_size, "bucket: '%s' is not minute, hour or day", query_bucket(query));
        return nullptr;
    }
    return table;
}

// The latest downloads the `downloads` report lists.
constexpr int kLatestDownloads = 50;

inline std::string fixed(double value, int decimals = 3) {
    char text[48];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    return text;
}

inline std::string seconds(int64_t us) { return fixed(static_cast<double>(us) / 1e6); }

// Nearest-rank percentile of sorted durations, in seconds; empty when there are none.
inline Cell percentile_seconds(const std::vector<int64_t>& sorted_us, double fraction) {
    if (sorted_us.empty()) return std::nullopt;
    const auto rank = static_cast<size_t>(std::ceil(fraction * static_cast<double>(sorted_us.size())));
    return seconds(sorted_us[std::max<size_t>(rank, 1) - 1]);
}

// The summary row from its parts.
inline std::vector<Cell> summary_row(int64_t downloads, int64_t completed, int64_t bytes, int64_t clients,
                                     const std::vector<int64_t>& sorted_durations_us) {
    return {std::to_string(downloads),
            std::to_string(completed),
            downloads > 0 ? Cell(fixed(static_cast<double>(completed) / static_cast<double>(downloads))) : std::nullopt,
            std::to_string(bytes),
            std::to_string(clients),
            percentile_seconds(sorted_durations_us, 0.5),
            percentile_seconds(sorted_durations_us, 0.95)};
}

// "2026-11-24T10:30:00Z" for microseconds since the epoch.
inline std::string utc_time(int64_t us) {
    const time_t when = static_cast<time_t>(us / 1'000'000);
    std::tm tm{};
    gmtime_r(&when, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

// Distinct bytes / file size, or completed (0 or 1) for an empty file.
inline std::string coverage(int64_t distinct_bytes, int64_t file_size, bool completed) {
    return fixed(
        file_size > 0 ? static_cast<double>(distinct_bytes) / static_cast<double>(file_size) : (completed ? 1.0 : 0.0),
        4);
}

// A `timeseries` row: the bucket that starts at `start_us` (UTC), the
// downloads that started in it, how many of those completed, and the bytes
// sent to them.
inline void add_timeseries_row(OwnedTable& table, int64_t start_us, int64_t downloads, int64_t completed,
                               int64_t bytes_sent) {
    table.add_row(
        {utc_time(start_us), std::to_string(downloads), std::to_string(completed), std::to_string(bytes_sent)});
}

// The `daily` report and the `timeseries` report by day read the per-day
// totals that tracking.retention never deletes, not the downloads. A day
// (UTC, "2026-11-24") is in when any of it is in [since, until): its
// totals are not split by the hour.
constexpr int64_t kDayUs = 86'400'000'000;
inline std::string utc_day(int64_t us) { return utc_time(us - us % kDayUs).substr(0, 10); }
// The first and the last day of the query's window.
inline std::pair<std::string, std::string> query_days(const smp_query& query) {
    const int64_t until_us = query.until_us > 0 ? query.until_us : INT64_MAX;
    return {utc_day(std::max<int64_t>(query.since_us, 0)),
            until_us == INT64_MAX ? "9999-12-31" : utc_day(until_us - 1)};
}
// The start of a day "2026-11-24" in microseconds since the epoch (UTC).
inline int64_t day_start_us(const std::string& day) {
    std::tm tm{};
    if (std::sscanf(day.c_str(), "%d-%d-%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3) return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<int64_t>(timegm(&tm)) * 1'000'000;
}
// The `in_progress` report lists the downloads neither finished nor
// completed that were active in the last minute before the query's until
// (or now), the most recently active first, at most this many.
constexpr int64_t kInProgressWindowUs = 60'000'000;
constexpr int kInProgressRows = 100;

// The window of `in_progress` on last_us: [first, end), the minute before
// the query's until; without one, the minute before now, `end` INT64_MAX
// (a download of another node whose clock is ahead still shows).
struct ActivityWindow {
    int64_t first_us;
    int64_t end_us;
};
inline ActivityWindow in_progress_window(const smp_query& query) {
    if (query.until_us > 0) return {query.until_us - kInProgressWindowUs, query.until_us};
    using namespace std::chrono;
    const int64_t now_us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
    return {now_us - kInProgressWindowUs, INT64_MAX};
}

// What an `in_progress` row shows of a download, as a store read it.
struct OpenDownload {
    Cell id;
    int64_t first_us = 0;
    Cell path, client_ip, country;
    int64_t file_size = 0;
    int64_t distinct_bytes = 0;
    int64_t bytes_sent = 0;
    int64_t active_us = 0;
    Cell requests;
    int64_t last_us = 0;
};

// speed_bps is the bytes sent per second of active time (a request
// transferring), no value before any.
inline void add_in_progress_row(OwnedTable& table, const OpenDownload& d) {
    const Cell speed = d.active_us > 0
                           ? Cell(fixed(static_cast<double>(d.bytes_sent) * 1e6 / static_cast<double>(d.active_us), 0))
                           : std::nullopt;
    table.add_row({d.id, utc_time(d.first_us), d.path, d.client_ip, d.country, std::to_string(d.file_size),
                   std::to_string(d.distinct_bytes), coverage(d.distinct_bytes, d.file_size, false), speed, d.requests,
                   utc_time(d.last_us)});
}

// The reasons rows, most requests first (ties by name): per reason, the
// requests and the downloads that ended so.
inline void add_reason_rows(OwnedTable& table, const std::map<std::string, std::pair<int64_t, int64_t>>& counts) {
    std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> sorted(counts.begin(), counts.end());
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    for (const auto& [reason, count] : sorted)
        table.add_row({reason, std::to_string(count.first), std::to_string(count.second)});
}

// The `tls` report's name for the requests over plain TCP: no TLS version
// is ever spelled so ("TLSv1.2", "TLSv1.3").
constexpr const char* kPlainTransport = "plain";

// What the `tls` report counts of the requests over one TLS version.
struct TransportCount {
    int64_t requests = 0;
    int64_t bytes_sent = 0;  // body bytes, as downloads count them
};

// The tls rows, most requests first (ties by name): per TLS version (or
// kPlainTransport), the requests, their share of every request counted in
// percent, and the body bytes sent.
inline void add_tls_rows(OwnedTable& table, const std::map<std::string, TransportCount>& counts) {
    int64_t total = 0;
    for (const auto& [version, count] : counts) total += count.requests;
    std::vector<std::pair<std::string, TransportCount>> sorted(counts.begin(), counts.end());
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.second.requests > b.second.requests; });
    for (const auto& [version, count] : sorted)
        table.add_row({version, std::to_string(count.requests),
                       fixed(100.0 * static_cast<double>(count.requests) / static_cast<double>(total), 1),
                       std::to_string(count.bytes_sent)});
}

// The reports count people: the requests and downloads of class kBotClass
// are left out unless the query includes bots (`clients` shows every class).
constexpr const char* kBotClass = "bot";
// A stored row without a class (before ABI 1.12) is of this one.
constexpr const char* kUnknownClass = "unknown";
// The top user agents `clients` lists under each class.
constexpr size_t kTopAgents = 10;

// What `clients` counts of the downloads of one class, or of one agent.
struct ClientCount {
    int64_t downloads = 0;
    int64_t completed = 0;
    int64_t bytes = 0;  // distinct bytes, as summary counts them
    int64_t clients = 0;
};

// The clients rows: per class, most downloads first (ties by name), a row
// of rank 0 with no user_agent for the whole class, then its top agents by
// downloads (ties by agent), ranked from 1. `agents` is keyed by class,
// then agent (no value: no agent sent).
inline void add_client_rows(OwnedTable& table, const std::map<std::string, ClientCount>& classes,
                            const std::map<std::string, std::map<Cell, ClientCount>>& agents) {
    const auto row = [&table](const std::string& client_class, size_t rank, const Cell& agent, const ClientCount& c) {
        table.add_row({client_class, std::to_string(rank), agent, std::to_string(c.downloads),
                       std::to_string(c.completed), std::to_string(c.bytes), std::to_string(c.clients)});
    };
    std::vector<std::pair<std::string, ClientCount>> sorted(classes.begin(), classes.end());
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.second.downloads > b.second.downloads; });
    for (const auto& [client_class, total] : sorted) {
        row(client_class, 0, std::nullopt, total);
        const auto of_class = agents.find(client_class);
        if (of_class == agents.end()) continue;
        std::vector<std::pair<Cell, ClientCount>> top(of_class->second.begin(), of_class->second.end());
        std::stable_sort(top.begin(), top.end(),
                         [](const auto& a, const auto& b) { return a.second.downloads > b.second.downloads; });
        for (size_t i = 0; i < top.size() && i < kTopAgents; ++i) row(client_class, i + 1, top[i].first, top[i].second);
    }
}

// The tables a store handed out, until free_table.
class Tables {
   public:
    smp_table* keep(std::unique_ptr<OwnedTable> table) {
        smp_table* view = table->finish();
        tables_.emplace(view, std::move(table));
        return view;
    }
    void free(smp_table* table) { tables_.erase(table); }

   private:
    std::map<const smp_table*, std::unique_ptr<OwnedTable>> tables_;
};

}  // namespace smp_report
