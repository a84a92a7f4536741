// A set of closed intervals [first, last] of unsigned integers, kept sorted
// and merged: the bytes of a file delivered so far, or the microseconds in
// which a download was transferring.
#pragma once

#include <cstdint>
#include <span>

namespace smp {

// Most downloads are one interval (a whole file, or one span of time), and a
// million of them are open at once in the stats collector: the set keeps one
// interval inline and goes to the heap only for a second one. The layout is
// 24 bytes: the count and the heap capacity (4 bytes each), then either the
// inline interval or the heap array's address (16 bytes). The number of
// values is not stored but summed: it is read when a download is handed
// out, not on each request.
class IntervalSet {
   public:
    struct Interval {
        uint64_t first;
        uint64_t last;
        bool operator==(const Interval&) const = default;
    };

    IntervalSet() noexcept : one_{} {}
    IntervalSet(const IntervalSet& other);
    IntervalSet(IntervalSet&& other) noexcept;
    IntervalSet& operator=(const IntervalSet& other);
    IntervalSet& operator=(IntervalSet&& other) noexcept;
    ~IntervalSet() { release_heap(); }

    // Adds [first, last]; returns how many of its values were not in the set yet.
    uint64_t add(uint64_t first, uint64_t last);
    // Values in the set (0 for the whole range of uint64_t, which has 2^64).
    uint64_t size() const;
    // True when every value of [first, last] is in the set.
    bool covers(uint64_t first, uint64_t last) const;
    std::span<const Interval> intervals() const { return {data(), count_}; }
    // True when `intervals` are sorted, disjoint and not adjacent: what a set
    // holds, and what assign() needs.
    static bool well_formed(std::span<const Interval> intervals);
    // Replaces the set with `intervals`, which must be well_formed().
    void assign(std::span<const Interval> intervals);
    // Heap bytes the set holds beyond its own 24.
    size_t heap_bytes() const { return capacity_ * sizeof(Interval); }

   private:
    const Interval* data() const { return capacity_ == 0 ? &one_ : many_; }
    Interval* data() { return capacity_ == 0 ? &one_ : many_; }
    // Puts `merged` in place of the `removed` intervals from position `at`.
    void replace(uint32_t at, uint32_t removed, Interval merged);
    void release_heap() noexcept;

    uint32_t count_ = 0;
    uint32_t capacity_ = 0;  // of many_; 0 while the set is at most one interval, inline
    union {
        Interval one_;
        Interval* many_;  // sorted, disjoint, not adjacent
    };
};

}  // namespace smp
