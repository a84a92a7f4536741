#include "interval_set.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace smp {
namespace {

// A set that leaves its inline interval starts with room for this many.
constexpr uint32_t kFirstHeapCapacity = 4;

uint32_t heap_capacity_for(uint32_t count) { return std::max(kFirstHeapCapacity, std::bit_ceil(count)); }

}  // namespace

IntervalSet::IntervalSet(const IntervalSet& other) : one_{} { assign(other.intervals()); }

IntervalSet::IntervalSet(IntervalSet&& other) noexcept : count_(other.count_), capacity_(other.capacity_), one_{} {
    if (capacity_ == 0)
        one_ = other.one_;
    else
        many_ = other.many_;
    other.count_ = 0;
    other.capacity_ = 0;
}

IntervalSet& IntervalSet::operator=(const IntervalSet& other) {
    if (this != &other) assign(other.intervals());
    return *this;
}

IntervalSet& IntervalSet::operator=(IntervalSet&& other) noexcept {
    if (this == &other) return *this;
    release_heap();
    count_ = other.count_;
    capacity_ = other.capacity_;
    if (capacity_ == 0)
        one_ = other.one_;
    else
        many_ = other.many_;
    other.count_ = 0;
    other.capacity_ = 0;
    return *this;
}

void IntervalSet::release_heap() noexcept {
    if (capacity_ != 0) delete[] many_;
    capacity_ = 0;
    one_ = Interval{};
}

uint64_t IntervalSet::add(uint64_t first, uint64_t last) {
    if (last < first) return 0;
    const std::span<const Interval> all = intervals();
    // The intervals that touch [first, last] (overlap or adjacency) merge into one.
    const auto begin = std::lower_bound(all.begin(), all.end(), first, [](const Interval& i, uint64_t value) {
        return i.last != UINT64_MAX && i.last + 1 < value;
    });
    auto end = begin;
    uint64_t merged_first = first;
    uint64_t merged_last = last;
    uint64_t already = 0;
    while (end != all.end() && (last == UINT64_MAX || end->first <= last + 1)) {
        merged_first = std::min(merged_first, end->first);
        merged_last = std::max(merged_last, end->last);
        // Values of this interval inside [first, last] were already counted.
        const uint64_t overlap_first = std::max(first, end->first);
        const uint64_t overlap_last = std::min(last, end->last);
        if (overlap_first <= overlap_last) already += overlap_last - overlap_first + 1;
        ++end;
    }
    const uint64_t added = (last - first + 1) - already;
    replace(static_cast<uint32_t>(begin - all.begin()), static_cast<uint32_t>(end - begin),
            Interval{merged_first, merged_last});
    return added;
}

void IntervalSet::replace(uint32_t at, uint32_t removed, Interval merged) {
    const uint32_t new_count = count_ - removed + 1;
    if (new_count == 1) {
        release_heap();
        one_ = merged;
        count_ = 1;
        return;
    }
    // In place when the heap array has room and is not four times too large
    // (a download's many segments merged into a few give the memory back).
    const bool fits = new_count <= capacity_ && (capacity_ == kFirstHeapCapacity || new_count * 4 > capacity_);
    if (fits) {
        std::memmove(many_ + at + 1, many_ + at + removed, (count_ - at - removed) * sizeof(Interval));
        many_[at] = merged;
        count_ = new_count;
        return;
    }
    const uint32_t capacity = heap_capacity_for(new_count);
    Interval* const fresh = new Interval[capacity];
    const Interval* const old = data();
    std::copy(old, old + at, fresh);
    fresh[at] = merged;
    std::copy(old + at + removed, old + count_, fresh + at + 1);
    release_heap();
    many_ = fresh;
    capacity_ = capacity;
    count_ = new_count;
}

uint64_t IntervalSet::size() const {
    uint64_t values = 0;
    for (const Interval& interval : intervals()) values += interval.last - interval.first + 1;
    return values;
}

bool IntervalSet::covers(uint64_t first, uint64_t last) const {
    const std::span<const Interval> all = intervals();
    const auto found = std::upper_bound(all.begin(), all.end(), first,
                                        [](uint64_t value, const Interval& i) { return value < i.first; });
    if (found == all.begin()) return false;
    const Interval& candidate = *(found - 1);
    return candidate.first <= first && last <= candidate.last;
}

bool IntervalSet::well_formed(std::span<const Interval> intervals) {
    for (size_t i = 0; i < intervals.size(); ++i) {
        if (intervals[i].last < intervals[i].first) return false;
        // Adjacent intervals would have been merged: a gap of at least one value.
        if (i > 0 && (intervals[i - 1].last == UINT64_MAX || intervals[i].first <= intervals[i - 1].last + 1))
            return false;
    }
    return true;
}

void IntervalSet::assign(std::span<const Interval> intervals) {
    const auto count = static_cast<uint32_t>(intervals.size());
    if (count <= 1) {
        const Interval only = count == 1 ? intervals[0] : Interval{};
        release_heap();
        one_ = only;
        count_ = count;
        return;
    }
    const uint32_t capacity = heap_capacity_for(count);
    Interval* const fresh = new Interval[capacity];
    std::copy(intervals.begin(), intervals.end(), fresh);
    release_heap();
    many_ = fresh;
    capacity_ = capacity;
    count_ = count;
}

}  // namespace smp
