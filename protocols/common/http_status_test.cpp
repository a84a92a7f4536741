#include "http_status.hpp"

#include <doctest/doctest.h>

#include <string>

using smp::protocol::end_reason_for_status;
using smp::protocol::StatusFrom;

namespace {
std::string reason(int status, StatusFrom from = StatusFrom::server) {
    return smp_end_reason_name(end_reason_for_status(status, from));
}
}  // namespace

TEST_CASE("every status http_download sends has its end reason") {
    CHECK(reason(200) == "completed");
    CHECK(reason(206) == "completed");
    CHECK(reason(301) == "completed");  // a directory without its slash: answered as asked
    CHECK(reason(304) == "not_modified");
    CHECK(reason(308) == "completed");  // redirect_https: answered as configured
    CHECK(reason(400) == "bad_request");
    CHECK(reason(403) == "forbidden");
    CHECK(reason(404) == "not_found");
    CHECK(reason(405) == "method_not_allowed");
    CHECK(reason(412) == "precondition_failed");
    CHECK(reason(414) == "bad_request");
    CHECK(reason(416) == "range_not_satisfiable");
    CHECK(reason(429) == "rejected_limit");
    CHECK(reason(431) == "bad_request");
    CHECK(reason(500) == "internal_error");
    CHECK(reason(503) == "internal_error");
    CHECK(reason(505) == "bad_request");  // was recorded `completed`
}

TEST_CASE("forward's own statuses, and the origin's") {
    // Answered by the proxy itself.
    CHECK(reason(400) == "bad_request");
    CHECK(reason(501) == "method_not_allowed");  // CONNECT
    CHECK(reason(502) == "upstream_error");      // the origin refused or broke its answer
    CHECK(reason(504) == "upstream_error");      // the origin did not answer in time
    CHECK(reason(505) == "bad_request");         // was recorded `upstream_error`
    CHECK(reason(410) == "link_expired");        // secure_link: the only 410 this server makes
    // Relayed from the origin.
    CHECK(reason(200, StatusFrom::origin) == "completed");
    CHECK(reason(206, StatusFrom::origin) == "completed");
    CHECK(reason(401, StatusFrom::origin) == "forbidden");
    CHECK(reason(410, StatusFrom::origin) == "not_found");
    CHECK(reason(418, StatusFrom::origin) == "bad_request");
    CHECK(reason(500, StatusFrom::origin) == "upstream_error");
    CHECK(reason(503, StatusFrom::origin) == "upstream_error");
    CHECK(reason(505, StatusFrom::origin) == "upstream_error");
    CHECK(reason(501, StatusFrom::origin) == "method_not_allowed");
}
