#include "units.hpp"

#include <doctest/doctest.h>

using smp::parse_duration;
using smp::parse_size;

TEST_CASE("sizes accept binary and decimal units") {
    CHECK(parse_size("0") == 0);
    CHECK(parse_size("512") == 512);
    CHECK(parse_size("512B") == 512);
    CHECK(parse_size("256KiB") == 256 * 1024);
    CHECK(parse_size("4k") == 4096);
    CHECK(parse_size("1 MiB") == 1024 * 1024);
    CHECK(parse_size("2G") == int64_t{2} * 1024 * 1024 * 1024);
    CHECK(parse_size("10MB") == 10'000'000);
}

TEST_CASE("sizes refuse garbage, negatives and overflow") {
    CHECK_FALSE(parse_size(""));
    CHECK_FALSE(parse_size("KiB"));
    CHECK_FALSE(parse_size("-1"));
    CHECK_FALSE(parse_size("12 parsecs"));
    CHECK_FALSE(parse_size("1.5MiB"));
    CHECK_FALSE(parse_size("9223372036854775807KiB"));
    CHECK_FALSE(parse_size("99999999999999999999"));
}

TEST_CASE("durations are milliseconds and a plain number is seconds") {
    CHECK(parse_duration("30") == 30'000);
    CHECK(parse_duration("30s") == 30'000);
    CHECK(parse_duration("500ms") == 500);
    CHECK(parse_duration("5m") == 300'000);
    CHECK(parse_duration("2h") == 7'200'000);
    CHECK_FALSE(parse_duration("soon"));
    CHECK_FALSE(parse_duration("5 weeks"));
}
