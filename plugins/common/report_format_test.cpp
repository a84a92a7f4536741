#include "report_format.hpp"

#include <doctest/doctest.h>

using smp_report::parse_time;

namespace {

// A table of one row and the ABI's three kinds of column.
struct OneRow {
    const char* columns[4] = {"path", "downloads", "completed", "country"};
    const int numeric[4] = {smp_report::kText, smp_report::kNumber, smp_report::kBoolean, smp_report::kText};
    const char* cells[4];
    smp_table table{sizeof(smp_table), 4, columns, numeric, 1, cells};

    OneRow(const char* path, const char* downloads, const char* completed, const char* country)
        : cells{path, downloads, completed, country} {}
};

}  // namespace

TEST_CASE("times for --since and --until") {
    constexpr int64_t now = 1'800'000'000'000'000;
    CHECK(parse_time("2026-11-24", now) == int64_t{1'795'478'400} * 1'000'000);
    CHECK(parse_time("2026-11-24T10:30:00", now) == int64_t{1'795'516'200} * 1'000'000);
    CHECK(parse_time("2026-11-24T10:30:00Z", now) == int64_t{1'795'516'200} * 1'000'000);
    CHECK(parse_time("2026-11-24 10:30:00", now) == int64_t{1'795'516'200} * 1'000'000);
    CHECK(parse_time("45s", now) == now - int64_t{45} * 1'000'000);
    CHECK(parse_time("30m", now) == now - int64_t{1'800} * 1'000'000);
    CHECK(parse_time("30min", now) == now - int64_t{1'800} * 1'000'000);
    CHECK(parse_time("2h", now) == now - int64_t{7'200} * 1'000'000);
    CHECK(parse_time("7d", now) == now - int64_t{7 * 86'400} * 1'000'000);
    CHECK(parse_time("500ms", now) == now - 500'000);
    CHECK(parse_time("0s", now) == now);
    CHECK_FALSE(parse_time("soon", now));
    CHECK_FALSE(parse_time("2026-13-45", now));
    CHECK_FALSE(parse_time("2026-11-24T10:30:00+01", now));
    CHECK_FALSE(parse_time("12", now));  // a bare number is neither a date nor an explicit time ago
    CHECK_FALSE(parse_time("-2h", now));
    CHECK_FALSE(parse_time("2w", now));
    CHECK_FALSE(parse_time("2h30m", now));
    CHECK_FALSE(parse_time("", now));
    CHECK_FALSE(parse_time("9999999999999999d", now));  // overflows
}

TEST_CASE("tables as JSON: numbers bare, text escaped, NULL as null") {
    const char* columns[] = {"path", "downloads", "country"};
    const int numeric[] = {0, 1, 0};
    const char* cells[] = {"a \"quoted\"\\name", "3", nullptr};
    const smp_table table{sizeof(smp_table), 3, columns, numeric, 1, cells};
    CHECK(smp_report::table_json("files", table) ==
          "{\"report\": \"files\", \"rows\": [\n  {\"path\": \"a \\\"quoted\\\"\\\\name\", \"downloads\": 3, "
          "\"country\": null}\n]}\n");
    CHECK(smp_report::table_text(table) ==
          "path             downloads  country\n"
          "a \"quoted\"\\name          3  -      \n");
    const char* control[] = {"tab\there", "3", "DE"};
    CHECK(smp_report::table_json("files", {sizeof(smp_table), 3, columns, numeric, 1, control})
              .find("\"path\": \"tab\\u0009here\"") != std::string::npos);
}

TEST_CASE("booleans: JSON true and false, null for no value; 0 and 1 as text and CSV") {
    const OneRow yes("a.bin", "2", "1", "DE");
    CHECK(smp_report::table_json("downloads", yes.table) ==
          "{\"report\": \"downloads\", \"rows\": [\n  {\"path\": \"a.bin\", \"downloads\": 2, \"completed\": true, "
          "\"country\": \"DE\"}\n]}\n");
    const OneRow no("a.bin", "2", "0", "DE");
    CHECK(smp_report::table_json("downloads", no.table).find("\"completed\": false,") != std::string::npos);
    const OneRow unknown("a.bin", "2", nullptr, "DE");
    CHECK(smp_report::table_json("downloads", unknown.table).find("\"completed\": null,") != std::string::npos);
    // Right-aligned as numbers are.
    CHECK(smp_report::table_text(no.table) ==
          "path   downloads  completed  country\n"
          "a.bin          2          0  DE     \n");
    CHECK(smp_report::table_csv(yes.table) == "path,downloads,completed,country\r\na.bin,2,1,DE\r\n");
}

TEST_CASE("CSV: RFC 4180 quoting, CRLF line ends, NULL as an empty field") {
    CHECK(smp_report::table_csv(OneRow("plain.bin", "1", "0", nullptr).table) ==
          "path,downloads,completed,country\r\nplain.bin,1,0,\r\n");
    CHECK(smp_report::table_csv(OneRow("a,b.bin", "1", "0", "DE").table) ==
          "path,downloads,completed,country\r\n\"a,b.bin\",1,0,DE\r\n");
    CHECK(smp_report::table_csv(OneRow("say \"hi\".bin", "1", "0", "DE").table) ==
          "path,downloads,completed,country\r\n\"say \"\"hi\"\".bin\",1,0,DE\r\n");
    CHECK(smp_report::table_csv(OneRow("two\nlines\r.bin", "1", "0", "DE").table) ==
          "path,downloads,completed,country\r\n\"two\nlines\r.bin\",1,0,DE\r\n");
    // An empty text is quoted, so that it is not read as no value.
    CHECK(smp_report::table_csv(OneRow("", "1", "0", nullptr).table) ==
          "path,downloads,completed,country\r\n\"\",1,0,\r\n");
    // A column name is a field like any other.
    const char* columns[] = {"odd,name"};
    const int numeric[] = {smp_report::kNumber};
    const smp_table empty{sizeof(smp_table), 1, columns, numeric, 0, nullptr};
    CHECK(smp_report::table_csv(empty) == "\"odd,name\"\r\n");
}

TEST_CASE("an empty table says so, in words true of every report") {
    const char* columns[] = {"tls_version", "requests"};
    const int numeric[] = {0, 1};
    const smp_table table{sizeof(smp_table), 2, columns, numeric, 0, nullptr};
    CHECK(smp_report::table_text(table) ==
          "tls_version  requests\n"
          "(nothing recorded in this period)\n");
    CHECK(smp_report::table_json("tls", table) == "{\"report\": \"tls\", \"rows\": []}\n");
    CHECK(smp_report::table_csv(table) == "tls_version,requests\r\n");
}

TEST_CASE("a row of another width than its table is refused, not shifted into the next columns") {
    auto table = smp_report::make_table("reasons");  // reason, requests, downloads
    table->add_row({std::string("completed"), std::string("3"), std::string("2")});
    CHECK_THROWS_WITH(table->add_row({std::string("completed"), std::string("3")}),
                      "a row of 2 cells in a table of 3 columns");
    CHECK(table->finish()->row_count == 1);
}
