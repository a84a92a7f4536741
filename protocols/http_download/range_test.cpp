#include "range.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>

using namespace smp::http;

namespace {

RangeRequest parse(std::string_view header, uint64_t size, size_t max_ranges = 16) {
    RangeRequest result;
    parse_range(header, size, max_ranges, result);
    return result;
}

}  // namespace

TEST_CASE("single, open-ended and suffix ranges") {
    auto r = parse("bytes=0-99", 1000);
    REQUIRE(r.outcome == RangeOutcome::partial);
    CHECK(r.ranges == std::vector<ByteRange>{{0, 99}});
    CHECK(parse("bytes=100-", 1000).ranges == std::vector<ByteRange>{{100, 999}});
    CHECK(parse("bytes=-500", 1000).ranges == std::vector<ByteRange>{{500, 999}});
    CHECK(parse("bytes=-5000", 1000).ranges == std::vector<ByteRange>{{0, 999}});
    CHECK(parse("Bytes = 5-5", 1000).outcome == RangeOutcome::ignore);  // no space allowed before '='
    CHECK(parse("BYTES=5-5", 1000).ranges == std::vector<ByteRange>{{5, 5}});
}

TEST_CASE("a range past the end is clamped, one starting past it is unsatisfiable") {
    CHECK(parse("bytes=900-5000", 1000).ranges == std::vector<ByteRange>{{900, 999}});
    CHECK(parse("bytes=1000-1001", 1000).outcome == RangeOutcome::unsatisfiable);
    CHECK(parse("bytes=1000-", 1000).outcome == RangeOutcome::unsatisfiable);
    CHECK(parse("bytes=-0", 1000).outcome == RangeOutcome::unsatisfiable);
    CHECK(parse("bytes=0-0", 0).outcome == RangeOutcome::unsatisfiable);
    CHECK(parse("bytes=-10", 0).outcome == RangeOutcome::unsatisfiable);
    // One satisfiable range among unsatisfiable ones is enough (§14.2).
    CHECK(parse("bytes=5000-6000,0-1", 1000).ranges == std::vector<ByteRange>{{0, 1}});
}

TEST_CASE("numbers that overflow saturate") {
    CHECK(parse("bytes=0-99999999999999999999999999", 1000).ranges == std::vector<ByteRange>{{0, 999}});
    CHECK(parse("bytes=99999999999999999999999999-", 1000).outcome == RangeOutcome::unsatisfiable);
    CHECK(parse("bytes=-99999999999999999999999999", 1000).ranges == std::vector<ByteRange>{{0, 999}});
    CHECK(parse("bytes=18446744073709551615-18446744073709551615", 1000).outcome == RangeOutcome::unsatisfiable);
}

TEST_CASE("garbage is ignored, so the client gets the whole file") {
    for (const char* header : {"", "bytes", "bytes=", "bytes=abc", "bytes=1-2-3", "bytes=5-1", "items=0-1", "bytes=--1",
                               "bytes=1-2,", "bytes=,", "bytes=0x10-20", "bytes=1-2;3-4"}) {
        CAPTURE(header);
        CHECK(parse(header, 1000).outcome == RangeOutcome::ignore);
    }
}

TEST_CASE("several ranges keep their order unless they overlap") {
    CHECK(parse("bytes=0-9, 20-29,100-199", 1000).ranges == std::vector<ByteRange>{{0, 9}, {20, 29}, {100, 199}});
    CHECK(parse("bytes=100-199,0-9", 1000).ranges == std::vector<ByteRange>{{100, 199}, {0, 9}});
    CHECK(parse("bytes=0-50,20-60,100-110,105-", 1000).ranges == std::vector<ByteRange>{{0, 60}, {100, 999}});
    // The abuse of RFC 9110 §17.15: many overlapping ranges collapse into one.
    CHECK(parse("bytes=0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-,0-", 1000).ranges ==
          std::vector<ByteRange>{{0, 999}});
}

TEST_CASE("more ranges than max_ranges are ignored") {
    CHECK(parse("bytes=0-0,2-2,4-4", 1000, 2).outcome == RangeOutcome::ignore);
    CHECK(parse("bytes=0-0,2-2", 1000, 2).outcome == RangeOutcome::partial);
    // More than max_ranges that merge into few: sorted and merged.
    CHECK(parse("bytes=50-60,0-1,1-2,0-0,55-70", 1000, 2).ranges == std::vector<ByteRange>{{0, 2}, {50, 70}});
}

TEST_CASE("a Range field of a hundred thousand ranges is answered at once") {
    // max_header_size may be 1 MiB: comparing its ranges pair by pair took minutes.
    std::string header = "bytes=";
    for (uint64_t first = 0; header.size() < 1024 * 1024; first += 2)
        header += std::to_string(first) + "-" + std::to_string(first) + ",";
    header += "0-0";
    const auto start = std::chrono::steady_clock::now();
    CHECK(parse(header, uint64_t{1} << 40).outcome == RangeOutcome::ignore);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}
