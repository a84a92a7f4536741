// http_download's conditional requests: the input is seven lines, the
// representation's entity tag and Last-Modified (Unix seconds), then
// If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range.
#include <charconv>
#include <string>

#include "conditional.hpp"
#include "require.hpp"

using namespace smp::http;
using smp::fuzz::require;

namespace {

// 0001-01-01 and 9999-12-31 23:59:59: the years IMF-fixdate writes in four digits.
constexpr int64_t kFirstDate = -62135596800;
constexpr int64_t kLastDate = 253402300799;

// RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE.
bool is_strong_entity_tag(std::string_view tag) {
    if (tag.size() < 2 || tag.front() != '"' || tag.back() != '"') return false;
    for (char c : tag.substr(1, tag.size() - 2)) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x21 || byte == '"' || byte == 0x7f) return false;
    }
    return true;
}

// A date that parses must format and parse back to the same second.
void check_date(std::string_view text) {
    const auto date = parse_http_date(text);
    if (!date || *date < kFirstDate || *date > kLastDate) return;
    char formatted[kHttpDateLength];
    format_http_date(*date, formatted);
    require(parse_http_date({formatted, kHttpDateLength}) == date, "a parsed date formats and parses back");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view rest = smp::fuzz::as_text(data, size);
    const std::string_view etag = smp::fuzz::take_line(rest);
    const std::string_view modified_line = smp::fuzz::take_line(rest);
    int64_t modified = 0;
    std::from_chars(modified_line.data(), modified_line.data() + modified_line.size(), modified);
    Conditions conditions;
    conditions.if_match = smp::fuzz::take_line(rest);
    conditions.if_none_match = smp::fuzz::take_line(rest);
    conditions.if_modified_since = smp::fuzz::take_line(rest);
    conditions.if_unmodified_since = smp::fuzz::take_line(rest);
    conditions.if_range = smp::fuzz::take_line(rest);

    // §13.2.2, steps 1 to 4, read from the RFC.
    const Precondition result = evaluate_preconditions(conditions, etag, modified);
    require(result == Precondition::proceed || result == Precondition::not_modified || result == Precondition::failed,
            "the result is 200, 304 or 412");
    bool failed = false;
    if (!conditions.if_match.empty()) {
        failed = !etag_list_matches(conditions.if_match, etag, false);
    } else if (!conditions.if_unmodified_since.empty()) {
        const auto date = parse_http_date(conditions.if_unmodified_since);
        failed = date && modified > *date;
    }
    bool not_modified = false;
    if (!conditions.if_none_match.empty()) {
        not_modified = etag_list_matches(conditions.if_none_match, etag, true);
    } else if (!conditions.if_modified_since.empty()) {
        const auto date = parse_http_date(conditions.if_modified_since);
        not_modified = date && modified <= *date;
    }
    const Precondition expected = failed         ? Precondition::failed
                                  : not_modified ? Precondition::not_modified
                                                 : Precondition::proceed;
    require(result == expected, "preconditions are evaluated in the order of §13.2.2");

    for (std::string_view list : {conditions.if_match, conditions.if_none_match}) {
        if (etag_list_matches(list, etag, false))
            require(etag_list_matches(list, etag, true), "a strong match is a weak match");
    }
    require(etag_list_matches(" * ", etag, false), "\"*\" matches any representation");
    if (is_strong_entity_tag(etag)) {
        const std::string tag(etag);
        require(etag_list_matches(tag, etag, false), "a strong tag matches itself");
        require(etag_list_matches("\"other\", " + tag, etag, false), "a strong tag is found in a list");
        require(etag_list_matches(tag + " ,\"a,b\"", etag, false), "a strong tag is found before a quoted comma");
        require(!etag_list_matches("W/" + tag, etag, false), "a weak tag never matches strongly");
        require(etag_list_matches("W/" + tag, etag, true), "a weak tag matches weakly");
        require(if_range_allows(tag, etag, modified), "If-Range with the current tag allows the range");
        require(!if_range_allows("W/" + tag, etag, modified), "If-Range with a weak tag does not");
    }

    require(if_range_allows("", etag, modified), "no If-Range allows the range");
    if (if_range_allows(conditions.if_range, etag, modified) &&
        conditions.if_range.find_first_not_of(" \t") != std::string_view::npos) {
        const auto date = parse_http_date(conditions.if_range);
        std::string_view tag = conditions.if_range;
        tag.remove_prefix(tag.find_first_not_of(" \t"));
        tag.remove_suffix(tag.size() - 1 - tag.find_last_not_of(" \t"));
        require(date == modified || (tag == etag && !etag.starts_with("W/")),
                "If-Range allows only the current validator");
    }

    check_date(conditions.if_modified_since);
    check_date(conditions.if_unmodified_since);
    check_date(conditions.if_range);
    if (modified >= kFirstDate && modified <= kLastDate) {
        char formatted[kHttpDateLength];
        format_http_date(modified, formatted);
        require(parse_http_date({formatted, kHttpDateLength}) == modified, "Last-Modified formats and parses back");
    }
    return 0;
}
