#include "merge.hpp"

#include <algorithm>
#include <string_view>

namespace smp::mongodb {
namespace {

// The union of inclusive intervals; touching ones (last + 1 == first) join,
// as in the collector's IntervalSet.
std::vector<smp_interval> unite(std::vector<smp_interval> all) {
    std::sort(all.begin(), all.end(), [](const smp_interval& a, const smp_interval& b) { return a.first < b.first; });
    std::vector<smp_interval> out;
    for (const auto& interval : all) {
        if (!out.empty() && interval.first <= out.back().last + 1)
            out.back().last = std::max(out.back().last, interval.last);
        else
            out.push_back(interval);
    }
    return out;
}

uint64_t covered(const std::vector<smp_interval>& intervals) {
    uint64_t total = 0;
    for (const auto& interval : intervals) total += interval.last - interval.first + 1;
    return total;
}

std::vector<smp_interval> copy(const smp_interval* intervals, size_t count) {
    return intervals == nullptr ? std::vector<smp_interval>{} : std::vector<smp_interval>(intervals, intervals + count);
}

}  // namespace

Part Part::of(const smp_download& download) {
    Part part;
    part.node = SMP_HAS(&download, node) && download.node != nullptr ? download.node : "";
    part.id = download.id;
    part.requests = download.requests;
    part.bytes_sent = download.bytes_sent;
    part.file_size = download.file_size;
    part.first_us = download.first_us;
    part.last_us = download.last_us;
    part.finished = SMP_HAS(&download, finished) ? download.finished != 0 : true;
    part.reason = download.reason;
    part.delivered = copy(download.delivered, download.delivered_count);
    const smp_interval* spans = nullptr;
    const size_t span_count = smp_download_active(&download, &spans);
    part.active = copy(spans, span_count);
    // A core before ABI 1.13 sends no spans: one from the first request's
    // start, as long as the time it was active, keeps active_us.
    if (part.active.empty() && download.active_us > 0)
        part.active.push_back(
            {static_cast<uint64_t>(download.first_us), static_cast<uint64_t>(download.first_us + download.active_us)});
    return part;
}

Merged merge(const std::vector<Part>& parts) {
    Merged merged;
    std::vector<smp_interval> delivered, active;
    const Part* latest = nullptr;
    merged.finished = true;
    for (const Part& part : parts) {
        delivered.insert(delivered.end(), part.delivered.begin(), part.delivered.end());
        active.insert(active.end(), part.active.begin(), part.active.end());
        merged.file_size = std::max(merged.file_size, part.file_size);
        merged.bytes_sent += part.bytes_sent;
        merged.requests += part.requests;
        merged.finished = merged.finished && part.finished;
        if (merged.first == nullptr || part.first_us < merged.first->first_us) merged.first = &part;
        if (latest == nullptr || part.last_us > latest->last_us) latest = &part;
        merged.nodes.push_back(part.node);
    }
    merged.first_us = merged.first->first_us;
    merged.last_us = latest->last_us;
    merged.delivered = unite(std::move(delivered));
    merged.active = unite(std::move(active));
    merged.distinct_bytes = covered(merged.delivered);
    merged.active_us = static_cast<int64_t>(covered(merged.active) - merged.active.size());
    merged.resumes = merged.active.empty() ? 0 : static_cast<uint32_t>(merged.active.size() - 1);
    merged.completed = merged.file_size > 0 && merged.distinct_bytes >= merged.file_size;
    if (merged.completed)
        merged.reason = SMP_END_COMPLETED;
    else
        merged.reason = latest->reason == SMP_END_COMPLETED ? SMP_END_INCOMPLETE : latest->reason;
    std::sort(merged.nodes.begin(), merged.nodes.end());
    merged.nodes.erase(std::unique(merged.nodes.begin(), merged.nodes.end()), merged.nodes.end());
    return merged;
}

bool joins(const Merged& merged, const Part& part, int64_t window_us) {
    const bool near = part.first_us <= merged.last_us + window_us && part.last_us + window_us >= merged.first_us;
    const bool fetched_again = merged.completed && part.first_us > merged.last_us;
    return near && !fetched_again;
}

int64_t merge_key(const smp_download& download) {
    uint64_t hash = 14695981039346656037ull;
    for (const char* text : {download.client_ip, download.user_agent, download.path, download.etag}) {
        const std::string_view bytes(text != nullptr ? text : "");
        for (const char c : bytes) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
        hash *= 1099511628211ull;  // the NUL that ends each field
    }
    return static_cast<int64_t>(hash);
}

}  // namespace smp::mongodb
