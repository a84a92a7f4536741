#include "interval_set.hpp"

#include <algorithm>

namespace smp {

uint64_t IntervalSet::add(uint64_t first, uint64_t last) {
    if (last < first) return 0;
    // The intervals that touch [first, last] (overlap or adjacency) merge into one.
    auto begin = std::lower_bound(intervals_.begin(), intervals_.end(), first, [](const Interval& i, uint64_t value) {
        return i.last != UINT64_MAX && i.last + 1 < value;
    });
    auto end = begin;
    uint64_t merged_first = first;
    uint64_t merged_last = last;
    uint64_t already = 0;
    while (end != intervals_.end() && (last == UINT64_MAX || end->first <= last + 1)) {
        merged_first = std::min(merged_first, end->first);
        merged_last = std::max(merged_last, end->last);
        // Values of this interval inside [first, last] were already counted.
        const uint64_t overlap_first = std::max(first, end->first);
        const uint64_t overlap_last = std::min(last, end->last);
        if (overlap_first <= overlap_last) already += overlap_last - overlap_first + 1;
        ++end;
    }
    const uint64_t added = (last - first + 1) - already;
    const auto at = intervals_.erase(begin, end);
    intervals_.insert(at, Interval{merged_first, merged_last});
    size_ += added;
    return added;
}

bool IntervalSet::covers(uint64_t first, uint64_t last) const {
    const auto found = std::upper_bound(intervals_.begin(), intervals_.end(), first,
                                        [](uint64_t value, const Interval& i) { return value < i.first; });
    if (found == intervals_.begin()) return false;
    const Interval& candidate = *(found - 1);
    return candidate.first <= first && last <= candidate.last;
}

}  // namespace smp
