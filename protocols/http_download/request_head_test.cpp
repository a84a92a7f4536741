#include "request_head.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using namespace smp::http;

namespace {

// Parses `request` as the connection does: up to the end of its header block.
int parse(std::string& request, RequestHead& head) {
    const size_t end = head_end(request);
    REQUIRE(end > 0);
    return read_request_head(request.data(), end, head);
}

}  // namespace

TEST_CASE("a request head's fields are found and NUL-terminated in place") {
    std::string request =
        "GET /big.bin?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: aria2/1.36.0\r\n"
        "Range: bytes=0-99\r\nIf-None-Match: \"abc\"\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n";
    RequestHead head;
    REQUIRE(parse(request, head) == 0);
    CHECK(static_cast<http_method>(head.parser.method) == HTTP_GET);
    CHECK(head.count(Field::host) == 1);
    CHECK(std::strcmp(head.target.data(), "/big.bin?x=1") == 0);
    CHECK(std::strcmp(head.user_agent.data(), "aria2/1.36.0") == 0);
    CHECK(std::strcmp(head.range.data(), "bytes=0-99") == 0);
    CHECK(std::strcmp(head.conditions.if_none_match.data(), "\"abc\"") == 0);
    CHECK(head.x_forwarded_for == "192.0.2.1");
    CHECK(head.field(Field::host) == "example.com");
    CHECK_FALSE(head.range_repeated);
}

TEST_CASE("every Host and Connection field of a head is seen") {
    std::string request =
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: ,close\r\nHOST: b:1\r\nconnection: keep-alive\r\n\r\n";
    RequestHead head;
    REQUIRE(parse(request, head) == 0);
    CHECK(head.count(Field::host) == 2);
    CHECK(head.field(Field::host) == "b:1");
    CHECK(head.connection_options().close);
    CHECK(head.connection_options().keep_alive);
}

TEST_CASE("a head that the lenient parser accepts is still refused when malformed") {
    const auto status = [](std::string request) {
        RequestHead head;
        return parse(request, head);
    };
    CHECK(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505);
    CHECK(status("GET / HTTP/1.1x\r\nHost: a\r\n\r\n") == 400);
    CHECK(status("GET / HTTP/1.1\r\nBad Name: a\r\n\r\n") == 400);
    CHECK(status("GET /\r\n\r\n") == 400);
    CHECK(status("\r\n\r\n") == 400);  // no request line, no target
    CHECK(status("GET / HTTP/1.0\n\n") == 0);
    // Folded lines (obs-fold) and a NUL in a value: the lenient parser passes them.
    CHECK(status("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: one\r\n two\r\n\r\n") == 400);
    CHECK(status("GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\t,5-6\r\n\r\n") == 400);
    // A fold after an empty first line: http_parser reports it as the only value.
    CHECK(status("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n") == 400);
    CHECK(status(std::string("GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \0\"x\"\r\n\r\n", 48)) == 400);
    CHECK(status("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent:\r\nReferer: \r\n\r\n") == 0);  // empty values
}

TEST_CASE("an empty line before the request line is ignored (RFC 9112 §2.2)") {
    std::string request = "\r\nGET /file HTTP/1.1\r\nHost: a\r\n\r\n";
    RequestHead head;
    CHECK(parse(request, head) == 0);
    CHECK(head.target == "/file");
    std::string http2 = "\nGET /file HTTP/2.0\nHost: a\n\n";
    RequestHead other;
    CHECK(parse(http2, other) == 505);
}

TEST_CASE("a header block that the lenient parser reads as two requests is refused") {
    std::string bare_cr = "GET /a HTTP/1.1\r\nHost: a\r\nX: y\rGET /b HTTP/1.1\r\n\r\n";
    RequestHead cr;
    CHECK(parse(bare_cr, cr) == 400);
    // "\n\r\r" ends the head for http_parser, not for head_end: the
    // block then holds a second request, which must not replace the first.
    std::string request = "GET /a HTTP/1.1\r\nHost: a\n\r\rGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    RequestHead head;
    CHECK(parse(request, head) == 400);
    std::string http09 = "GET /a HTTP/1.1\r\nHost: a\n\r\rGET /b\r\n\n";
    RequestHead other;
    CHECK(parse(http09, other) == 400);
    std::string with_body = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    RequestHead post;
    CHECK(parse(with_body, post) == 0);  // its body follows the block
}

TEST_CASE("an empty value's C string does not cut into the next field") {
    // http_parser marks an empty value at the start of the next line: a NUL
    // written after that view landed on the next field name's first letter.
    std::string request = "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent:\r\nReferer: r\r\n\r\n";
    RequestHead head;
    REQUIRE(parse(request, head) == 0);
    REQUIRE(head.fields.size() == 3);
    CHECK(head.fields[2].name == "Referer");
    CHECK(head.user_agent.empty());
    CHECK(std::strcmp(head.user_agent.data(), "") == 0);
    CHECK(std::strcmp(head.referer.data(), "r") == 0);
}
