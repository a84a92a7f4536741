// Conditional requests (RFC 9110 §13): validators, HTTP dates, and the order
// in which the preconditions are evaluated (§13.2.2).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace smp::http {

// The conditional header fields of a request; empty when absent.
struct Conditions {
    std::string_view if_match;
    std::string_view if_none_match;
    std::string_view if_modified_since;
    std::string_view if_unmodified_since;
    std::string_view if_range;
};

enum class Precondition {
    proceed,       // evaluate Range (if any) and send the representation
    not_modified,  // 304
    failed,        // 412
};

// §13.2.2 steps 1 to 4 for GET and HEAD; `etag` is the strong entity tag
// with its quotes, `modified` the Last-Modified time in Unix seconds.
Precondition evaluate_preconditions(const Conditions& conditions, std::string_view etag, int64_t modified);

// §13.1.5: true when Range may be honoured. A stale or weak entity tag, or a
// date other than Last-Modified, means the whole representation is sent.
bool if_range_allows(std::string_view if_range, std::string_view etag, int64_t modified);

// True when the If-Match / If-None-Match `list` ("*" or entity tags) names
// `etag`. Strong comparison when `weak` is false (§8.8.3.2).
bool etag_list_matches(std::string_view list, std::string_view etag, bool weak);

// IMF-fixdate, obsolete RFC 850 and asctime formats (§5.6.7); empty when invalid.
std::optional<int64_t> parse_http_date(std::string_view text);
// IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT": 29 characters, no terminator.
constexpr size_t kHttpDateLength = 29;
void format_http_date(int64_t unix_seconds, char* out);

}  // namespace smp::http
