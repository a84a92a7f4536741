#include "stats_command.hpp"

#include <doctest/doctest.h>

using smp::parse_time;

TEST_CASE("times for --since and --until") {
    constexpr int64_t now = 1'800'000'000'000'000;
    CHECK(parse_time("2026-11-24", now) == int64_t{1'795'478'400} * 1'000'000);
    CHECK(parse_time("2026-11-24T10:30:00", now) == int64_t{1'795'516'200} * 1'000'000);
    CHECK(parse_time("2026-11-24T10:30:00Z", now) == int64_t{1'795'516'200} * 1'000'000);
    CHECK(parse_time("2h", now) == now - int64_t{7'200} * 1'000'000);
    CHECK(parse_time("7d", now) == now - int64_t{7 * 86'400} * 1'000'000);
    CHECK_FALSE(parse_time("soon", now));
    CHECK_FALSE(parse_time("2026-13-45", now));
    CHECK_FALSE(parse_time("12", now));  // a bare number is neither a date nor an explicit time ago
}

TEST_CASE("tables as JSON: numbers bare, text escaped, NULL as null") {
    const char* columns[] = {"path", "downloads", "country"};
    const int numeric[] = {0, 1, 0};
    const char* cells[] = {"a \"quoted\"\\name", "3", nullptr};
    const smp_table table{sizeof(smp_table), 3, columns, numeric, 1, cells};
    CHECK(smp::table_json("files", table) ==
          "{\"report\": \"files\", \"rows\": [\n  {\"path\": \"a \\\"quoted\\\"\\\\name\", \"downloads\": 3, "
          "\"country\": null}\n]}\n");
    CHECK(smp::table_text(table) ==
          "path             downloads  country\n"
          "a \"quoted\"\\name          3  -      \n");
}

TEST_CASE("an empty table says so, in words true of every report") {
    const char* columns[] = {"tls_version", "requests"};
    const int numeric[] = {0, 1};
    const smp_table table{sizeof(smp_table), 2, columns, numeric, 0, nullptr};
    CHECK(smp::table_text(table) ==
          "tls_version  requests\n"
          "(nothing recorded in this period)\n");
}
