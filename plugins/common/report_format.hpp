// The report tables of `smprotocol stats` as text, JSON or CSV, and the rule
// for its --since and --until times: one copy, for the command and for the
// dashboard module (which cannot include the core's files). Header-only, and
// needs nothing but the ABI header and report_table.hpp.
#pragma once

#include <time.h>  // strptime, timegm: POSIX and glibc, not std::

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "report_table.hpp"
#include "smp_module.h"

namespace smp_report {

// `text` as a JSON string, quotes included, appended to `out`: quotes and
// backslashes escaped, control characters as \u00XX; other bytes as they
// are (the stores hold UTF-8).
inline void append_json_string(std::string& out, const char* text) {
    out += '"';
    for (const char* p = text; *p; ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
            out += escaped;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

// The cell of `row` and `column`: NULL for no value.
inline const char* cell_at(const smp_table& table, size_t row, size_t column) {
    return table.cells[row * table.column_count + column];
}

// One row of `table` as a JSON object {column: value, ...}: numbers bare,
// booleans true or false (a cell "0" is false, any other true), text as
// JSON strings, no value as null.
inline void append_row_json(std::string& out, const smp_table& table, size_t row) {
    out += '{';
    for (size_t column = 0; column < table.column_count; ++column) {
        if (column > 0) out += ", ";
        append_json_string(out, table.columns[column]);
        out += ": ";
        const char* value = cell_at(table, row, column);
        if (value == nullptr)
            out += "null";
        else if (table.numeric[column] == kBoolean)
            out += std::strcmp(value, "0") == 0 ? "false" : "true";
        else if (table.numeric[column] == kNumber)
            out += value;
        else
            append_json_string(out, value);
    }
    out += '}';
}

// The rows as a JSON array, a row a line: [{...}, {...}], or [].
inline std::string rows_json(const smp_table& table) {
    std::string out = "[";
    for (size_t row = 0; row < table.row_count; ++row) {
        out += row == 0 ? "\n  " : ",\n  ";
        append_row_json(out, table, row);
    }
    out += table.row_count > 0 ? "\n]" : "]";
    return out;
}

// {"report": NAME, "rows": [...]} (rows_json), what `stats --json` prints.
inline std::string table_json(const char* report, const smp_table& table) {
    std::string out = "{\"report\": ";
    append_json_string(out, report);
    out += ", \"rows\": ";
    out += rows_json(table);
    out += "}\n";
    return out;
}

// Aligned columns under a header line: numbers and booleans (0 or 1)
// right-aligned, text left-aligned, "-" for no value.
inline std::string table_text(const smp_table& table) {
    const auto shown = [&](size_t row, size_t column) {
        const char* value = cell_at(table, row, column);
        return std::string_view(value != nullptr ? value : "-");
    };
    std::vector<size_t> widths(table.column_count);
    for (size_t column = 0; column < table.column_count; ++column) {
        widths[column] = std::strlen(table.columns[column]);
        for (size_t row = 0; row < table.row_count; ++row)
            widths[column] = std::max(widths[column], shown(row, column).size());
    }
    std::string out;
    const auto line = [&](auto text_of) {
        for (size_t column = 0; column < table.column_count; ++column) {
            const std::string_view text = text_of(column);
            const std::string pad(widths[column] - text.size(), ' ');
            if (table.numeric[column] != kText) out += pad;
            out += text;
            if (table.numeric[column] == kText) out += pad;
            out += column + 1 < table.column_count ? "  " : "\n";
        }
    };
    line([&](size_t column) { return std::string_view(table.columns[column]); });
    for (size_t row = 0; row < table.row_count; ++row) line([&](size_t column) { return shown(row, column); });
    if (table.row_count == 0) out += "(nothing recorded in this period)\n";
    return out;
}

// RFC 4180 CSV: a header line of the column names, then a line a row, each
// line ended by CRLF (as RFC 4180 and text/csv say; every CSV reader takes
// it). A field with a comma, a quote, a CR or an LF is quoted, its quotes
// doubled. No value is an empty field; an empty text is "" (quoted), so that
// readers that tell the two apart (PostgreSQL's COPY) can. Booleans are 0 or
// 1, as the store gives them.
inline std::string table_csv(const smp_table& table) {
    std::string out;
    const auto field = [&out](const char* value) {
        if (value == nullptr) return;
        const std::string_view text(value);
        if (!text.empty() && text.find_first_of(",\"\r\n") == std::string_view::npos) {
            out += text;
            return;
        }
        out += '"';
        for (const char c : text) {
            if (c == '"') out += '"';
            out += c;
        }
        out += '"';
    };
    const auto line = [&](auto value_of) {
        for (size_t column = 0; column < table.column_count; ++column) {
            if (column > 0) out += ',';
            field(value_of(column));
        }
        out += "\r\n";
    };
    line([&](size_t column) { return table.columns[column]; });
    for (size_t row = 0; row < table.row_count; ++row) line([&](size_t column) { return cell_at(table, row, column); });
    return out;
}

// A time for --since and --until, in microseconds since the Unix epoch: a
// UTC date ("2026-11-24"), a UTC time ("2026-11-24T10:30:00", or with a
// space for the T; either with or without a final "Z"), or a time before
// `now_us` ("45s", "30m" or "30min", "2h", "7d", "500ms"). Empty when it is
// none of them: a bare number says no unit, and is refused.
inline std::optional<int64_t> parse_time(std::string_view text, int64_t now_us) {
    static constexpr std::array<std::pair<std::string_view, int64_t>, 6> kUnits{{
        {"ms", 1'000},
        {"s", 1'000'000},
        {"m", 60'000'000},
        {"min", 60'000'000},
        {"h", 3'600'000'000},
        {"d", 86'400'000'000},
    }};
    const auto trimmed = [](std::string_view part) {
        while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
        while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
        return part;
    };
    const std::string_view ago = trimmed(text);
    int64_t count = 0;
    const auto [rest, error] = std::from_chars(ago.data(), ago.data() + ago.size(), count);
    if (error == std::errc{} && rest != ago.data() && count >= 0) {
        const std::string_view unit = trimmed(ago.substr(static_cast<size_t>(rest - ago.data())));
        for (const auto& [name, us] : kUnits)
            if (unit == name && count <= std::numeric_limits<int64_t>::max() / us) return now_us - count * us;
    }
    const std::string copy(text);
    for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"}) {
        struct tm fields {};
        const char* end = strptime(copy.c_str(), format, &fields);
        if (end != nullptr && (*end == '\0' || (*end == 'Z' && end[1] == '\0')))
            return static_cast<int64_t>(timegm(&fields)) * 1'000'000;
    }
    return std::nullopt;
}

}  // namespace smp_report
