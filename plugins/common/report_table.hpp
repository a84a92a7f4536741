// The tables of `smprotocol stats`, shared by every store that answers them
// (sqlite, mongodb), so that the reports are the same whichever store holds
// the data: one set of columns per report, the same number formats, the same
// percentile rule. Header-only: each store module compiles its own copy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "smp_module.h"

namespace smp_report {

using Cell = std::optional<std::string>;  // empty: no value (JSON null)

// A table a store owns until free_table.
struct OwnedTable {
    smp_table table{};
    std::vector<std::string> names;
    std::vector<const char*> name_pointers;
    std::vector<int> numeric;
    std::vector<Cell> values;
    std::vector<const char*> cell_pointers;

    OwnedTable(std::initializer_list<std::pair<const char*, bool>> columns) {
        for (const auto& [name, is_number] : columns) {
            names.emplace_back(name);
            numeric.push_back(is_number ? 1 : 0);
        }
    }
    void add_row(std::vector<Cell> row) {
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
    if (report == "summary")
        return std::make_unique<OwnedTable>(
            std::initializer_list<std::pair<const char*, bool>>{{"downloads", true},
                                                                {"completed", true},
                                                                {"completion_rate", true},
                                                                {"bytes", true},
                                                                {"distinct_clients", true},
                                                                {"median_duration_s", true},
                                                                {"p95_duration_s", true}});
    if (report == "files")
        return std::make_unique<OwnedTable>(std::initializer_list<std::pair<const char*, bool>>{
            {"path", false}, {"downloads", true}, {"completed", true}, {"bytes", true}, {"median_duration_s", true}});
    if (report == "countries")
        return std::make_unique<OwnedTable>(std::initializer_list<std::pair<const char*, bool>>{
            {"country", false}, {"downloads", true}, {"completed", true}, {"bytes", true}});
    if (report == "reasons")
        return std::make_unique<OwnedTable>(std::initializer_list<std::pair<const char*, bool>>{
            {"reason", false}, {"requests", true}, {"downloads", true}});
    if (report == "downloads")
        return std::make_unique<OwnedTable>(std::initializer_list<std::pair<const char*, bool>>{{"id", true},
                                                                                                {"started", false},
                                                                                                {"path", false},
                                                                                                {"client_ip", false},
                                                                                                {"user_agent", false},
                                                                                                {"country", false},
                                                                                                {"asn", true},
                                                                                                {"coverage", true},
                                                                                                {"completed", true},
                                                                                                {"requests", true},
                                                                                                {"resumes", true},
                                                                                                {"duration_s", true},
                                                                                                {"active_s", true},
                                                                                                {"reason", false},
                                                                                                {"finished", true}});
    if (report == "tls")
        return std::make_unique<OwnedTable>(std::initializer_list<std::pair<const char*, bool>>{
            {"tls_version", false}, {"requests", true}, {"percent", true}, {"bytes_sent", true}});
    return nullptr;
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
