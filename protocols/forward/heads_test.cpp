#include "heads.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace smp::forward;

TEST_CASE("first_line is the start line, after an empty line that http_parser skips") {
    CHECK(first_line("HTTP/1.1 200 OK\r\nA: b\r\n\r\n") == "HTTP/1.1 200 OK");
    CHECK(first_line("HTTP/1.1 200 OK\nA: b\n\n") == "HTTP/1.1 200 OK");
    CHECK(first_line("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == "GET / HTTP/1.1");
    CHECK(first_line("\nHTTP/1.0 204 No Content\n\n") == "HTTP/1.0 204 No Content");
    CHECK(first_line("\r\n") == "");
    CHECK(first_line("HTTP/1.1 416 Range Not Satisfiabl\re\nA: b\n\n") == "HTTP/1.1 416 Range Not Satisfiabl");
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
    build_upstream_head({"GET", "/a.bin", 1}, fields, "192.0.2.7", out);
    CHECK(out ==
          "GET /a.bin HTTP/1.1\r\nHost: example.org\r\nRange: bytes=0-99\r\nIf-Range: \"abc\"\r\n"
          "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nForwarded: for=192.0.2.7;proto=http\r\n\r\n");
}

TEST_CASE("the origin's request line is written from what was parsed, the fields without their white space") {
    const std::vector<HeaderField> fields = {{"Host", "a "}, {"Content-Length", "5"}, {"Connection", "close"}};
    std::string out;
    build_upstream_head({"POST", "/x?y=1", 0}, fields, "192.0.2.7", out);
    CHECK(out.starts_with("POST /x?y=1 HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nX-Forwarded-For: 192.0.2.7\r\n"));
    build_upstream_head({"GET", "/", 9}, {}, "192.0.2.7", out);
    CHECK(out.starts_with("GET / HTTP/1.1\r\n"));
}

TEST_CASE("framing fields are never hop-by-hop, whatever Connection names") {
    const std::vector<HeaderField> fields = {{"Connection", "Content-Length, transfer-encoding"}};
    CHECK_FALSE(is_hop_by_hop("Content-Length", fields));
    CHECK_FALSE(is_hop_by_hop("Transfer-Encoding", fields));
}

TEST_CASE("a head is strict: CRLF line ends, no NUL, no folded line") {
    CHECK(head_problem("GET / HTTP/1.1\r\nHost: a\r\nX: b c\t\r\n\r\n").empty());
    CHECK_FALSE(head_problem("GET / HTTP/1.1\nHost: a\n\n").empty());
    CHECK_FALSE(head_problem("GET / HTTP/1.1\r\nHost: a\n\r\n").empty());
    CHECK_FALSE(head_problem("GET / HTTP/1.1\r\nHost: a\r\nForwarded: \x1f for=x\r\n\r\n").empty());
    CHECK_FALSE(head_problem("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n").empty());
    CHECK_FALSE(head_problem("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n").empty());
    CHECK_FALSE(head_problem("GET / HTTP/1.1\r\nX:\r\n\tb\r\n\r\n").empty());
    CHECK_FALSE(head_problem(std::string_view("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 26)).empty());
}

TEST_CASE("a request target has no space and no control character") {
    CHECK(is_request_target("/a/b?c=d%20e"));
    CHECK(is_request_target("*"));
    CHECK(is_request_target("/caf\xc3\xa9"));
    CHECK_FALSE(is_request_target(""));
    CHECK_FALSE(is_request_target("/a\tb"));
    CHECK_FALSE(is_request_target("/a\x7f"));
}

TEST_CASE("ambiguous framing in a request's fields") {
    using Fields = std::vector<HeaderField>;
    CHECK(request_fields_problem(Fields{{"Content-Length", " 5 "}, {"Connection", "close, X-A"}}, 1).empty());
    CHECK(request_fields_problem(Fields{{"Transfer-Encoding", "Chunked"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Connection", "close, Content-Length"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Connection", "transfer-encoding"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Connection", "keep-alive,host"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Content-Length", "5"}, {"Content-Length", "5"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Content-Length", "5, 5"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Content-Length", "+5"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Content-Length", "99999999999999999999999"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Transfer-Encoding", "gzip, chunked"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Transfer-Encoding", "chunked, identity"}}, 1).empty());
    CHECK_FALSE(
        request_fields_problem(Fields{{"Transfer-Encoding", "identity"}, {"Transfer-Encoding", "chunked"}}, 1).empty());
    CHECK_FALSE(request_fields_problem(Fields{{"Transfer-Encoding", "chunked"}}, 0).empty());
}

TEST_CASE("Forwarded brackets and quotes an IPv6 client, after what the client sent") {
    const std::vector<HeaderField> fields = {{"Forwarded", "for=198.51.100.1"}};
    std::string out;
    build_upstream_head({"GET", "/", 1}, fields, "::1", out);
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

TEST_CASE("a status line is relayed only when it is one") {
    CHECK(smp::forward::is_status_line("HTTP/1.1 200 OK", 200));
    CHECK(smp::forward::is_status_line("HTTP/1.0 404", 404));
    CHECK(smp::forward::is_status_line("HTTP/1.1 206 Partial\tContent", 206));
    CHECK_FALSE(smp::forward::is_status_line(std::string_view("HTT*\0"
                                                              "1.1 305 Not Modified",
                                                              25),
                                             305));
    CHECK_FALSE(smp::forward::is_status_line("HTTP/1.1 200 OK", 201));
    CHECK_FALSE(smp::forward::is_status_line("HTTP/1.1 2000 OK", 200));
    CHECK_FALSE(smp::forward::is_status_line(std::string_view("HTTP/1.1 200 O\0K", 16), 200));
    CHECK_FALSE(smp::forward::is_status_line("HTTP/2 200 OK", 200));
}
