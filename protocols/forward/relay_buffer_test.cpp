#include "relay_buffer.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

using namespace smp::forward;

TEST_CASE("a relay buffer moves its unsent bytes to the front only when the tail is full") {
    char memory[8];
    RelayBuffer buffer{memory, sizeof memory, 0, 0};
    CHECK(buffer.make_room() == 8);
    std::memcpy(buffer.data, "abcdefgh", 8);
    buffer.end = 8;
    CHECK(buffer.full());
    CHECK(buffer.make_room() == 0);
    buffer.consume(5);
    CHECK(buffer.size() == 3);
    CHECK(buffer.make_room() == 5);
    CHECK(std::memcmp(buffer.data, "fgh", 3) == 0);
    buffer.consume(3);
    CHECK(buffer.empty());
    CHECK(buffer.begin == 0);
}

TEST_CASE("a body with a length: the wire bytes the client took are the file bytes, from the range start") {
    BodyMap map;
    map.start(1000);
    map.add(0, 100);
    map.add(100, 100);
    std::vector<smp_interval> intervals;
    map.deliver(50, intervals);
    map.deliver(200, intervals);
    REQUIRE(intervals.size() == 1);
    CHECK(intervals[0].first == 1000);
    CHECK(intervals[0].last == 1199);
    CHECK(map.decoded() == 200);
}

TEST_CASE("a chunked body: the framing between the chunks is not file bytes") {
    // "5\r\nhello\r\n3\r\nabc\r\n": data at wire offsets 3..7 and 15..17.
    BodyMap map;
    map.start(0);
    map.add(3, 5);
    map.add(15, 3);
    std::vector<smp_interval> intervals;
    map.deliver(6, intervals);  // the client took "5\r\nhel"
    REQUIRE(intervals.size() == 1);
    CHECK(intervals[0].last == 2);
    map.deliver(16, intervals);  // up to the "a" of the second chunk
    REQUIRE(intervals.size() == 1);
    CHECK(intervals[0].first == 0);
    CHECK(intervals[0].last == 5);
    map.deliver(100, intervals);
    CHECK(intervals[0].last == 7);
    CHECK(map.decoded() == 8);
}
