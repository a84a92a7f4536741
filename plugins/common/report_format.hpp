// TEMPORARY stand-in until the stats branch lands its version.
#pragma once
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include "smp_module.h"
namespace smp_report {
inline void append_json_string(std::string& out, const char* text) {
    out += '"';
    for (const char* p = text; *p; ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c == '"' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
        else if (c < 0x20) { char e[8]; std::snprintf(e, sizeof e, "\\u%04x", c); out += e; }
        else out += static_cast<char>(c);
    }
    out += '"';
}
inline std::string table_json(const char* report, const smp_table& table) {
    std::string out = "{\"report\": ";
    append_json_string(out, report);
    out += ", \"rows\": [";
    for (size_t row = 0; row < table.row_count; ++row) {
        out += row == 0 ? "\n  {" : ",\n  {";
        for (size_t column = 0; column < table.column_count; ++column) {
            if (column > 0) out += ", ";
            append_json_string(out, table.columns[column]);
            out += ": ";
            const char* cell = table.cells[row * table.column_count + column];
            if (cell == nullptr) out += "null";
            else if (table.numeric[column] == 2) out += cell[0] == '1' ? "true" : "false";
            else if (table.numeric[column]) out += cell;
            else append_json_string(out, cell);
        }
        out += '}';
    }
    out += table.row_count > 0 ? "\n]}\n" : "]}\n";
    return out;
}
inline std::optional<int64_t> parse_time(std::string_view text, int64_t now_us) {
    if (!text.empty() && text.back() >= 'a') {
        const int64_t n = std::strtoll(std::string(text).c_str(), nullptr, 10);
        const char u = text.back();
        const int64_t s = u == 's' ? 1 : u == 'm' ? 60 : u == 'h' ? 3600 : u == 'd' ? 86400 : 0;
        if (s) return now_us - n * s * 1000000;
    }
    struct tm fields {};
    const std::string copy(text);
    for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"}) {
        fields = {};
        const char* end = strptime(copy.c_str(), format, &fields);
        if (end != nullptr && (*end == '\0' || (*end == 'Z' && end[1] == '\0')))
            return static_cast<int64_t>(timegm(&fields)) * 1'000'000;
    }
    return std::nullopt;
}
}  // namespace smp_report
