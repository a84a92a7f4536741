#include "conditional.hpp"

#include <array>
#include <cstring>
#include <ctime>
#include <string>

namespace smp::http {
namespace {

constexpr std::array<const char*, 7> kDays{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<const char*, 12> kMonths{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

bool is_weak(std::string_view tag) { return tag.starts_with("W/"); }

// The opaque part of an entity tag, with its quotes, or empty when malformed.
std::string_view opaque(std::string_view tag) {
    if (is_weak(tag)) tag.remove_prefix(2);
    if (tag.size() < 2 || tag.front() != '"' || tag.back() != '"') return {};
    return tag;
}

}  // namespace

bool etag_list_matches(std::string_view list, std::string_view etag, bool weak) {
    list = trim(list);
    if (list == "*") return true;
    while (!list.empty()) {
        // Entity tags may hold commas inside their quotes: find each tag's end.
        size_t start = list.starts_with("W/") ? 2 : 0;
        size_t end = list.find(',');
        if (start < list.size() && list[start] == '"') {
            const size_t close = list.find('"', start + 1);
            end = close == std::string_view::npos ? std::string_view::npos : list.find(',', close);
        }
        const std::string_view tag = trim(list.substr(0, end));
        if (!tag.empty()) {
            const bool usable = weak || (!is_weak(tag) && !is_weak(etag));
            if (usable && !opaque(tag).empty() && opaque(tag) == opaque(etag)) return true;
        }
        if (end == std::string_view::npos) break;
        list = trim(list.substr(end + 1));
    }
    return false;
}

std::optional<int64_t> parse_http_date(std::string_view text) {
    text = trim(text);
    if (text.size() > 64) return std::nullopt;
    const std::string copy(text);
    for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
        struct tm fields {};
        const char* end = strptime(copy.c_str(), format, &fields);
        if (end != nullptr && *end == '\0') return static_cast<int64_t>(timegm(&fields));
    }
    return std::nullopt;
}

void format_http_date(int64_t unix_seconds, char* out) {
    const time_t t = static_cast<time_t>(unix_seconds);
    struct tm fields {};
    gmtime_r(&t, &fields);
    char text[64];
    std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[static_cast<size_t>(fields.tm_wday)],
                  fields.tm_mday, kMonths[static_cast<size_t>(fields.tm_mon)], fields.tm_year + 1900, fields.tm_hour,
                  fields.tm_min, fields.tm_sec);
    std::memcpy(out, text, kHttpDateLength);
}

Precondition evaluate_preconditions(const Conditions& conditions, std::string_view etag, int64_t modified) {
    // Step 1 and 2: If-Match, else If-Unmodified-Since.
    if (!conditions.if_match.empty()) {
        if (!etag_list_matches(conditions.if_match, etag, false)) return Precondition::failed;
    } else if (!conditions.if_unmodified_since.empty()) {
        const auto date = parse_http_date(conditions.if_unmodified_since);
        if (date && modified > *date) return Precondition::failed;
    }
    // Step 3 and 4: If-None-Match, else If-Modified-Since.
    if (!conditions.if_none_match.empty()) {
        if (etag_list_matches(conditions.if_none_match, etag, true)) return Precondition::not_modified;
    } else if (!conditions.if_modified_since.empty()) {
        const auto date = parse_http_date(conditions.if_modified_since);
        if (date && modified <= *date) return Precondition::not_modified;
    }
    return Precondition::proceed;
}

bool if_range_allows(std::string_view if_range, std::string_view etag, int64_t modified) {
    if_range = trim(if_range);
    if (if_range.empty()) return true;
    // A strong comparison (§8.8.3.2): neither tag may be weak, the server's included.
    if (if_range.front() == '"' || if_range.starts_with("W/"))
        return !is_weak(if_range) && !is_weak(etag) && opaque(if_range) == opaque(etag) && !opaque(etag).empty();
    const auto date = parse_http_date(if_range);
    return date && *date == modified;
}

}  // namespace smp::http
