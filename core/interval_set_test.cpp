#include "interval_set.hpp"

#include <doctest/doctest.h>

using smp::IntervalSet;

TEST_CASE("intervals merge when they overlap or touch, and count new values once") {
    IntervalSet set;
    CHECK(set.add(0, 9) == 10);
    CHECK(set.add(20, 29) == 10);
    CHECK(set.intervals().size() == 2);
    CHECK(set.add(5, 24) == 10);  // 10..19 are new
    CHECK(set.intervals() == std::vector<IntervalSet::Interval>{{0, 29}});
    CHECK(set.add(30, 39) == 10);  // adjacent: merged
    CHECK(set.intervals() == std::vector<IntervalSet::Interval>{{0, 39}});
    CHECK(set.add(0, 39) == 0);
    CHECK(set.size() == 40);
}

TEST_CASE("an interval spanning several merges them all") {
    IntervalSet set;
    set.add(10, 19);
    set.add(30, 39);
    set.add(50, 59);
    CHECK(set.add(0, 100) == 101 - 30);
    CHECK(set.intervals() == std::vector<IntervalSet::Interval>{{0, 100}});
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
