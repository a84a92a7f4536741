#include "heads.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace smp::forward;

TEST_CASE("head_end finds the blank line, with CRLF or bare LF") {
    CHECK(head_end("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY") == 27);
    CHECK(head_end("GET / HTTP/1.1\nHost: a\n\nBODY") == 24);
    CHECK(head_end("GET / HTTP/1.1\r\nHost: a\r\n") == 0);
    CHECK(head_end("") == 0);
}

TEST_CASE("field names are tokens") {
    CHECK(is_field_name("X-Forwarded-For"));
    CHECK_FALSE(is_field_name("Bad Name"));
    CHECK_FALSE(is_field_name(""));
    CHECK_FALSE(is_field_name("a:b"));
}

TEST_CASE("hop-by-hop fields: the fixed list and those Connection names") {
    const std::vector<HeaderField> fields = {{"Connection", "close, X-Secret"}, {"X-Secret", "1"}, {"Range", "x"}};
    CHECK(is_hop_by_hop("keep-alive", fields));
    CHECK(is_hop_by_hop("CONNECTION", fields));
    CHECK(is_hop_by_hop("x-secret", fields));
    CHECK_FALSE(is_hop_by_hop("Range", fields));
    CHECK_FALSE(is_hop_by_hop("Transfer-Encoding", fields));
}

TEST_CASE("the origin's head: hop-by-hop dropped, the client appended to X-Forwarded-For and Forwarded") {
    const std::vector<HeaderField> fields = {{"Host", "example.org"},
                                             {"Connection", "keep-alive"},
                                             {"X-Forwarded-For", "10.0.0.1"},
                                             {"Range", "bytes=0-99"},
                                             {"If-Range", "\"abc\""}};
    std::string out;
    build_upstream_head("GET /a.bin HTTP/1.1", fields, "192.0.2.7", out);
    CHECK(out ==
          "GET /a.bin HTTP/1.1\r\nHost: example.org\r\nRange: bytes=0-99\r\nIf-Range: \"abc\"\r\n"
          "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nForwarded: for=192.0.2.7;proto=http\r\n\r\n");
}

TEST_CASE("Forwarded brackets and quotes an IPv6 client, after what the client sent") {
    const std::vector<HeaderField> fields = {{"Forwarded", "for=198.51.100.1"}};
    std::string out;
    build_upstream_head("GET / HTTP/1.1", fields, "::1", out);
    CHECK(out.find("Forwarded: for=198.51.100.1, for=\"[::1]\";proto=http\r\n") != std::string::npos);
    CHECK(out.find("X-Forwarded-For: ::1\r\n") != std::string::npos);
}

TEST_CASE("the client's head keeps end-to-end fields and says how the connection goes on") {
    const std::vector<HeaderField> fields = {{"Content-Length", "5"}, {"Keep-Alive", "timeout=5"}, {"ETag", "\"e\""}};
    std::string out;
    build_client_head("HTTP/1.1 200 OK", fields, ClientConnection::close, out);
    CHECK(out == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e\"\r\nConnection: close\r\n\r\n");
    out.clear();
    build_client_head("HTTP/1.1 200 OK", fields, ClientConnection::keep_alive, out);
    CHECK(out.ends_with("Connection: keep-alive\r\n\r\n"));
    out.clear();
    build_client_head("HTTP/1.1 200 OK", fields, ClientConnection::keep_alive_implied, out);
    CHECK(out.find("Connection") == std::string::npos);
}

TEST_CASE("Content-Range of a 206 and of a 416") {
    const ContentRange partial = parse_content_range("bytes 100-199/1000");
    CHECK(partial.valid);
    CHECK(partial.satisfied);
    CHECK(partial.first == 100);
    CHECK(partial.last == 199);
    CHECK(partial.total == 1000);
    const ContentRange unsatisfied = parse_content_range("bytes */1000");
    CHECK(unsatisfied.valid);
    CHECK_FALSE(unsatisfied.satisfied);
    CHECK(unsatisfied.total == 1000);
    const ContentRange unknown_total = parse_content_range("bytes 0-9/*");
    CHECK(unknown_total.valid);
    CHECK(unknown_total.total == -1);
    CHECK_FALSE(parse_content_range("bytes 10-5/100").valid);
    CHECK_FALSE(parse_content_range("bytes 0-100/100").valid);
    CHECK_FALSE(parse_content_range("items 0-1/2").valid);
    CHECK_FALSE(parse_content_range("bytes */*").valid);
    CHECK_FALSE(parse_content_range("bytes x-1/2").valid);
}
