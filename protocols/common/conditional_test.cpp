#include "conditional.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace smp::http;

namespace {
constexpr std::string_view kEtag = "\"1000-5f3a\"";
constexpr int64_t kModified = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT
}  // namespace

TEST_CASE("HTTP dates in the three formats") {
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == kModified);
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == kModified);
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == kModified);
    CHECK_FALSE(parse_http_date("yesterday"));
    CHECK_FALSE(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing"));
    char text[kHttpDateLength];
    format_http_date(kModified, text);
    CHECK(std::string(text, kHttpDateLength) == "Sun, 06 Nov 1994 08:49:37 GMT");
}

TEST_CASE("entity tag lists, strong and weak comparison") {
    CHECK(etag_list_matches("*", kEtag, false));
    CHECK(etag_list_matches("\"1000-5f3a\"", kEtag, false));
    CHECK(etag_list_matches("\"x\", \"1000-5f3a\"", kEtag, false));
    CHECK(etag_list_matches("\"a,b\", \"1000-5f3a\"", kEtag, false));
    CHECK_FALSE(etag_list_matches("\"other\"", kEtag, false));
    CHECK_FALSE(etag_list_matches("W/\"1000-5f3a\"", kEtag, false));
    CHECK(etag_list_matches("W/\"1000-5f3a\"", kEtag, true));
    CHECK_FALSE(etag_list_matches("1000-5f3a", kEtag, true));
}

TEST_CASE("If-None-Match is evaluated before If-Modified-Since and wins") {
    Conditions c;
    c.if_none_match = kEtag;
    CHECK(evaluate_preconditions(c, kEtag, kModified) == Precondition::not_modified);
    c.if_none_match = "\"stale\"";
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT";  // would say not modified, but is ignored
    CHECK(evaluate_preconditions(c, kEtag, kModified) == Precondition::proceed);
}

TEST_CASE("If-Modified-Since compares seconds and ignores invalid dates") {
    Conditions c;
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
    CHECK(evaluate_preconditions(c, kEtag, kModified) == Precondition::not_modified);
    CHECK(evaluate_preconditions(c, kEtag, kModified + 1) == Precondition::proceed);
    c.if_modified_since = "garbage";
    CHECK(evaluate_preconditions(c, kEtag, kModified) == Precondition::proceed);
}

TEST_CASE("If-Match and If-Unmodified-Since fail with 412") {
    Conditions c;
    c.if_match = "\"other\"";
    CHECK(evaluate_preconditions(c, kEtag, kModified) == Precondition::failed);
    c.if_match = kEtag;
    CHECK(evaluate_preconditions(c, kEtag, kModified) == Precondition::proceed);
    Conditions d;
    d.if_unmodified_since = "Sun, 06 Nov 1994 08:49:36 GMT";
    CHECK(evaluate_preconditions(d, kEtag, kModified) == Precondition::failed);
    // If-Match present: If-Unmodified-Since is not evaluated (step 2 is the else of step 1).
    d.if_match = "*";
    CHECK(evaluate_preconditions(d, kEtag, kModified) == Precondition::proceed);
}

TEST_CASE("If-Range: strong tag or exact date, else the whole file") {
    CHECK(if_range_allows("", kEtag, kModified));
    CHECK(if_range_allows(kEtag, kEtag, kModified));
    CHECK_FALSE(if_range_allows("\"stale\"", kEtag, kModified));
    CHECK_FALSE(if_range_allows("W/\"1000-5f3a\"", kEtag, kModified));
    CHECK(if_range_allows("Sun, 06 Nov 1994 08:49:37 GMT", kEtag, kModified));
    CHECK_FALSE(if_range_allows("Sun, 06 Nov 1994 08:49:38 GMT", kEtag, kModified));
    CHECK_FALSE(if_range_allows("nonsense", kEtag, kModified));
    // A weak validator of the server's never passes a strong comparison.
    CHECK_FALSE(if_range_allows("\"1000-5f3a\"", "W/\"1000-5f3a\"", kModified));
}
