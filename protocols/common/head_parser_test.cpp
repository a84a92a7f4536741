#include "head_parser.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace smp::http;

namespace {

int parse(const std::string& block, ParsedHead& head) {
    http_parser parser;
    return parse_request_head(block, parser, head);
}

}  // namespace

TEST_CASE("a request head's fields are gathered in order, with their ids") {
    ParsedHead head;
    const std::string block = "GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: aria2\r\nX-Other: 1\r\nhost: y\r\n\r\n";
    REQUIRE(parse(block, head) == 0);  // the views point into `block`
    CHECK(head.target_view == "/a?b");
    REQUIRE(head.fields.size() == 4);
    CHECK(head.fields[1].name == "User-Agent");
    CHECK(head.fields[1].value == "aria2");
    CHECK(head.fields[1].id == Field::user_agent);
    CHECK(head.fields[2].id == Field::other);
    CHECK(head.count(Field::host) == 2);
    CHECK(head.field(Field::host) == "y");
    CHECK(head.field(Field::range).empty());
    CHECK(head.request_complete);  // no body: the request ended with its head
}

TEST_CASE("the common parser refuses what its lenient Debian build lets through") {
    const auto status = [](const std::string& block) {
        ParsedHead head;
        return parse(block, head);
    };
    CHECK(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
    CHECK(status("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
    CHECK(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505);
    CHECK(status("GET / HTTp/1.1\r\nHost: a\r\n\r\n") == 400);
    CHECK(status("GET / HTTP/1.1\r\nBad Name: a\r\n\r\n") == 400);
    CHECK(status("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n") == 400);
    CHECK(status("GET / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n") == 400);
    CHECK(status("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n") == 400);
    CHECK(status(std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 26)) == 400);
    CHECK(status("GET\r\n\r\n") == 400);
}

TEST_CASE("a head with a body leaves the parser ready for it") {
    ParsedHead head;
    http_parser parser;
    const std::string block = "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    REQUIRE(parse_request_head(block, parser, head) == 0);
    CHECK_FALSE(head.request_complete);
    CHECK(http_parser_execute(&parser, &kRequestParserSettings, "abc", 3) == 3);
    CHECK(head.request_complete);
    // The next head starts over.
    REQUIRE(parse_request_head("GET / HTTP/1.0\r\n\r\n", parser, head) == 0);
    CHECK(head.fields.empty());
    CHECK(head.target_view == "/");
}
