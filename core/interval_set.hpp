// A set of closed intervals [first, last] of unsigned integers, kept sorted
// and merged: the bytes of a file delivered so far, or the microseconds in
// which a download was transferring.
#pragma once

#include <cstdint>
#include <vector>

namespace smp {

class IntervalSet {
   public:
    struct Interval {
        uint64_t first;
        uint64_t last;
        bool operator==(const Interval&) const = default;
    };

    // Adds [first, last]; returns how many of its values were not in the set yet.
    uint64_t add(uint64_t first, uint64_t last);
    // Values in the set.
    uint64_t size() const { return size_; }
    // True when every value of [first, last] is in the set.
    bool covers(uint64_t first, uint64_t last) const;
    const std::vector<Interval>& intervals() const { return intervals_; }

   private:
    std::vector<Interval> intervals_;  // sorted, disjoint, not adjacent
    uint64_t size_ = 0;
};

}  // namespace smp
