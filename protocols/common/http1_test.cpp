#include "http1.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace smp::http;

TEST_CASE("head_end finds the blank line, with CRLF or bare LF") {
    CHECK(head_end("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY") == 27);
    CHECK(head_end("GET / HTTP/1.1\nHost: a\n\nBODY") == 24);
    CHECK(head_end("GET / HTTP/1.1\nHost: a\r\n\r\n") == 26);
    CHECK(head_end("GET / HTTP/1.1\r\nHost: a\r\n") == 0);
    CHECK(head_end("") == 0);
}

TEST_CASE("empty lines before a request line are counted, a bare LF is not one") {
    CHECK(leading_empty_lines("GET / HTTP/1.1\r\n") == 0);
    CHECK(leading_empty_lines("\r\n\r\nGET / HTTP/1.1\r\n") == 4);
    CHECK(leading_empty_lines("\r\n\nGET") == 2);
    CHECK(leading_empty_lines("\r") == 0);
}

TEST_CASE("a field name is a token, compared without case") {
    CHECK(is_token("X-Forwarded-For"));
    CHECK(is_token("!#$%&'*+-.^_`|~09azAZ"));
    CHECK_FALSE(is_token(""));
    CHECK_FALSE(is_token("Bad Name"));
    CHECK_FALSE(is_token("a:b"));
    CHECK_FALSE(is_token("caf\xc3\xa9"));
    CHECK(same_name("Content-Length", "content-LENGTH"));
    CHECK_FALSE(same_name("content-length", "content-lengt"));
    CHECK_FALSE(same_name("a", "\x81"));  // only ASCII letters fold
}

TEST_CASE("field names map to their ids once, whatever their case") {
    CHECK(field_of("Host") == Field::host);
    CHECK(field_of("CONNECTION") == Field::connection);
    CHECK(field_of("transfer-encoding") == Field::transfer_encoding);
    CHECK(field_of("Transfer-Encoding-X") == Field::other);
    CHECK(field_of("x-forwarded-for") == Field::x_forwarded_for);
    CHECK(field_of("If-None-Match") == Field::if_none_match);
    CHECK(field_of("") == Field::other);
    CHECK(field_of("hos") == Field::other);
}

TEST_CASE("list elements are trimmed and empty ones skipped (RFC 9110 5.6.1.2)") {
    std::vector<std::string> seen;
    for_each_element(" a ,, b,\t,c ,", [&](std::string_view e) { seen.emplace_back(e); });
    CHECK(seen == std::vector<std::string>{"a", "b", "c"});
    CHECK(list_contains(",close", "close"));
    CHECK(list_contains("keep-alive, Close", "close"));
    CHECK_FALSE(list_contains("closed", "close"));
    CHECK_FALSE(list_contains("", "close"));
}

TEST_CASE("a connection persists as RFC 9112 9.3 says") {
    const auto persists = [](unsigned minor, std::vector<std::string_view> values) {
        ConnectionOptions options;
        for (std::string_view value : values) options.add(value);
        return keeps_alive(minor, options);
    };
    CHECK(persists(1, {}));
    CHECK_FALSE(persists(1, {",close"}));
    CHECK_FALSE(persists(1, {"keep-alive", "close"}));
    CHECK_FALSE(persists(0, {}));
    CHECK(persists(0, {"Keep-Alive"}));
    CHECK_FALSE(persists(0, {"keep-alive, close"}));
    CHECK(persists(1, {"upgrade"}));
}

TEST_CASE("the request line's version is HTTP/1.x, letter by letter") {
    CHECK(check_request_version("GET / HTTP/1.1\r\n\r\n") == 0);
    CHECK(check_request_version("GET / HTTP/1.0\n\n") == 0);
    CHECK(check_request_version("\r\nGET / HTTP/1.1\r\n\r\n") == 0);
    CHECK(check_request_version("GET / HTTP/2.0\r\n\r\n") == 505);
    CHECK(check_request_version("GET / HTTp/1.1\r\n\r\n") == 400);
    CHECK(check_request_version("GET / HT*P/1.1\r\n\r\n") == 400);
    CHECK(check_request_version("GET / HTTP/1.10\r\n\r\n") == 400);
    CHECK(check_request_version("GET\r\n\r\n") == 400);
}

TEST_CASE("a Host value is uri-host [: port] (RFC 9112 3.2, RFC 3986 3.2.2)") {
    for (std::string_view valid : {"example.com", "example.com:8080", "127.0.0.1", "127.0.0.1:80", "[::1]", "[::1]:9",
                                   "[2001:db8::7]", "a", "", "a:", "xn--caf-dma.example", "my%20host", "[v1.x:y]"})
        CHECK_MESSAGE(is_valid_host(valid), valid);
    for (std::string_view invalid : {"a:9000:80", "example.com/\\:552", "[v6", "[::1", "[::1]x", "[::1]:a", "[nope]",
                                     "a b", "a@b", "a/b", "%zz", "a:80x", "[]", "[v.x]", "[v1.]"})
        CHECK_MESSAGE(!is_valid_host(invalid), invalid);
}

TEST_CASE("one valid Host for HTTP/1.1, at most one for HTTP/1.0") {
    CHECK(host_fields_valid(1, 1, "a"));
    CHECK(host_fields_valid(1, 1, " a "));
    CHECK_FALSE(host_fields_valid(1, 0, ""));
    CHECK_FALSE(host_fields_valid(1, 2, "a"));
    CHECK(host_fields_valid(0, 0, ""));
    CHECK_FALSE(host_fields_valid(0, 2, "a"));
    CHECK_FALSE(host_fields_valid(0, 1, "a:9000:80"));
}

TEST_CASE("a bare CR and a folded line are found on the bytes") {
    CHECK_FALSE(has_bare_cr("HTTP/1.1 200 OK\r\nX: a\r\n\r\n"));
    CHECK_FALSE(has_bare_cr("HTTP/1.1 200 OK\nX: a\n\n"));
    CHECK(has_bare_cr("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\rZ0\r\nContent-Length: 5\r\n\r\n"));
    CHECK(has_bare_cr("HTTP/1.1 200 OK\rX: a\r\n\r\n"));
    CHECK(has_bare_cr("HTTP/1.1 200 OK\r\n\r"));
    CHECK_FALSE(has_folded_line("GET / HTTP/1.1\r\nX: a\r\n\r\n"));
    CHECK(has_folded_line("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"));
    CHECK(has_folded_line("GET / HTTP/1.1\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n"));
    CHECK(has_folded_line("GET / HTTP/1.1\nX:\n b\n\n"));
}

TEST_CASE("a head too large is 414 when its request line is, else 431") {
    CHECK(oversized_head_status("GET /aaaaaaaa") == 414);
    CHECK(oversized_head_status("GET / HTTP/1.1\r\nX: aaaa") == 431);
    CHECK(oversized_head_status("\r\n\r\nGET /aaaa") == 414);  // the empty lines before it are not its end
}
