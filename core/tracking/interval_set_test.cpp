#include "interval_set.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

using smp::IntervalSet;
using Intervals = std::vector<IntervalSet::Interval>;

namespace {

Intervals intervals_of(const IntervalSet& set) { return {set.intervals().begin(), set.intervals().end()}; }

}  // namespace

TEST_CASE("intervals merge when they overlap or touch, and count new values once") {
    IntervalSet set;
    CHECK(set.add(0, 9) == 10);
    CHECK(set.add(20, 29) == 10);
    CHECK(set.intervals().size() == 2);
    CHECK(set.add(5, 24) == 10);  // 10..19 are new
    CHECK(intervals_of(set) == Intervals{{0, 29}});
    CHECK(set.add(30, 39) == 10);  // adjacent: merged
    CHECK(intervals_of(set) == Intervals{{0, 39}});
    CHECK(set.add(0, 39) == 0);
    CHECK(set.size() == 40);
}

TEST_CASE("an interval spanning several merges them all") {
    IntervalSet set;
    set.add(10, 19);
    set.add(30, 39);
    set.add(50, 59);
    CHECK(set.add(0, 100) == 101 - 30);
    CHECK(intervals_of(set) == Intervals{{0, 100}});
}

TEST_CASE("out of order segments, as a download manager sends them") {
    IntervalSet set;
    const uint64_t segment = 1000;
    for (uint64_t i : {7, 3, 0, 5, 1, 6, 2, 4}) set.add(i * segment, i * segment + segment - 1);
    CHECK(set.size() == 8000);
    CHECK(set.covers(0, 7999));
    CHECK_FALSE(set.covers(0, 8000));
}

TEST_CASE("covers needs one interval holding the whole range") {
    IntervalSet set;
    set.add(0, 9);
    set.add(11, 20);
    CHECK(set.covers(0, 9));
    CHECK(set.covers(12, 20));
    CHECK_FALSE(set.covers(5, 15));
    CHECK_FALSE(set.covers(21, 21));
    CHECK_FALSE(IntervalSet{}.covers(0, 0));
}

TEST_CASE("the largest values do not overflow") {
    IntervalSet set;
    CHECK(set.add(UINT64_MAX - 9, UINT64_MAX) == 10);
    CHECK(set.add(UINT64_MAX - 19, UINT64_MAX - 10) == 10);
    CHECK(set.intervals().size() == 1);
    CHECK(set.add(5, 4) == 0);
}

TEST_CASE("one interval is held inline; the heap is used from the second and given back") {
    CHECK(sizeof(IntervalSet) == 24);
    IntervalSet set;
    set.add(0, 9);
    set.add(10, 19);  // adjacent: still one
    CHECK(set.heap_bytes() == 0);
    set.add(30, 39);
    CHECK(set.heap_bytes() > 0);
    CHECK(intervals_of(set) == Intervals{{0, 19}, {30, 39}});
    set.add(20, 29);
    CHECK(set.heap_bytes() == 0);
    CHECK(intervals_of(set) == Intervals{{0, 39}});
    // Many segments merged into a few leave the large array.
    IntervalSet segments;
    for (uint64_t i = 0; i < 100; ++i) segments.add(i * 10, i * 10 + 4);
    const size_t large = segments.heap_bytes();
    segments.add(0, 899);
    CHECK(intervals_of(segments) == Intervals{{0, 904},
                                              {910, 914},
                                              {920, 924},
                                              {930, 934},
                                              {940, 944},
                                              {950, 954},
                                              {960, 964},
                                              {970, 974},
                                              {980, 984},
                                              {990, 994}});
    CHECK(segments.heap_bytes() < large);
}

TEST_CASE("copies and moves of inline and heap sets are independent and equal") {
    IntervalSet one;
    one.add(5, 9);
    IntervalSet many;
    for (uint64_t i = 0; i < 10; ++i) many.add(i * 10, i * 10 + 1);
    for (const IntervalSet* original : {&one, &many}) {
        const Intervals expected = intervals_of(*original);
        IntervalSet copy(*original);
        CHECK(intervals_of(copy) == expected);
        copy.add(0, 1000);
        CHECK(intervals_of(*original) == expected);
        IntervalSet assigned;
        assigned.add(2000, 3000);
        assigned = *original;
        CHECK(intervals_of(assigned) == expected);
        IntervalSet moved(std::move(assigned));
        CHECK(intervals_of(moved) == expected);
        CHECK(assigned.intervals().empty());
        IntervalSet move_assigned;
        move_assigned.add(1, 1);
        move_assigned.add(3, 3);
        move_assigned = std::move(moved);
        CHECK(intervals_of(move_assigned) == expected);
        CHECK(move_assigned.size() == original->size());
    }
}

TEST_CASE("random additions agree with a set of every value") {
    std::mt19937 random(7);
    for (int round = 0; round < 50; ++round) {
        IntervalSet set;
        std::vector<bool> values(300);
        for (int i = 0; i < 40; ++i) {
            const uint64_t first = random() % 300;
            const uint64_t last = std::min<uint64_t>(299, first + random() % (i % 5 == 0 ? 60 : 6));
            uint64_t fresh = 0;
            for (uint64_t v = first; v <= last; ++v) {
                fresh += values[v] ? 0 : 1;
                values[v] = true;
            }
            REQUIRE(set.add(first, last) == fresh);
        }
        Intervals expected;
        for (uint64_t v = 0; v < values.size(); ++v) {
            if (!values[v]) continue;
            if (!expected.empty() && expected.back().last + 1 == v)
                expected.back().last = v;
            else
                expected.push_back({v, v});
        }
        CHECK(intervals_of(set) == expected);
        CHECK(IntervalSet::well_formed(set.intervals()));
        CHECK(set.size() == static_cast<uint64_t>(std::count(values.begin(), values.end(), true)));
    }
}

TEST_CASE("assign takes well-formed intervals; well_formed refuses unsorted, overlapping or adjacent ones") {
    CHECK(IntervalSet::well_formed(Intervals{}));
    CHECK(IntervalSet::well_formed(Intervals{{0, 0}, {2, 5}, {7, UINT64_MAX}}));
    CHECK_FALSE(IntervalSet::well_formed(Intervals{{5, 4}}));
    CHECK_FALSE(IntervalSet::well_formed(Intervals{{0, 4}, {5, 6}}));
    CHECK_FALSE(IntervalSet::well_formed(Intervals{{0, 4}, {3, 6}}));
    CHECK_FALSE(IntervalSet::well_formed(Intervals{{10, 14}, {0, 6}}));
    CHECK_FALSE(IntervalSet::well_formed(Intervals{{0, UINT64_MAX}, {0, 1}}));
    IntervalSet set;
    set.assign(Intervals{{0, 0}, {2, 5}, {7, 9}});
    CHECK(set.size() == 8);
    CHECK(set.add(1, 1) == 1);
    CHECK(intervals_of(set) == Intervals{{0, 5}, {7, 9}});
    set.assign(Intervals{{4, 4}});
    CHECK(set.heap_bytes() == 0);
    CHECK(intervals_of(set) == Intervals{{4, 4}});
}
