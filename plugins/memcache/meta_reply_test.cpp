#include "meta_reply.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace smp::memcache;
using namespace std::string_view_literals;

TEST_CASE("meta replies: each head line memcached sends to ma, mg and ms") {
    SUBCASE("a counter's value, then the next reply") {
        const auto bytes = "VA 1\r\n2\r\nHD\r\n"sv;
        const Reply value = parse_reply(bytes);
        REQUIRE(value.status == ParseStatus::kDone);
        CHECK(value.kind == ReplyKind::kValue);
        CHECK(value.value == "2");
        CHECK(value.used == 9);
        const Reply next = parse_reply(bytes.substr(value.used));
        REQUIRE(next.status == ParseStatus::kDone);
        CHECK(next.kind == ReplyKind::kStored);
        CHECK(next.used == 4);
    }
    SUBCASE("codes with and without flags") {
        CHECK(parse_head("HD\r\n").kind == ReplyKind::kStored);
        CHECK(parse_head("HD t60\r\n").kind == ReplyKind::kStored);
        CHECK(parse_head("NF\r\n").kind == ReplyKind::kNotFound);
        CHECK(parse_head("NS\r\n").kind == ReplyKind::kNotStored);
        CHECK(parse_head("EX\r\n").kind == ReplyKind::kExists);
        CHECK(parse_head("EN\r\n").kind == ReplyKind::kMiss);
        CHECK(parse_head("MN\r\n").kind == ReplyKind::kNoOp);
        const ReplyHead value = parse_head("VA 5 f0 t-1\r\nhello\r\n");
        REQUIRE(value.status == ParseStatus::kDone);
        CHECK(value.kind == ReplyKind::kValue);
        CHECK(value.value_size == 5);
        CHECK(value.used == 13);
    }
    SUBCASE("an empty value") {
        const Reply reply = parse_reply("VA 0\r\n\r\n");
        REQUIRE(reply.status == ParseStatus::kDone);
        CHECK(reply.value.empty());
        CHECK(reply.used == 8);
    }
    SUBCASE("error lines keep their text") {
        const ReplyHead client = parse_head("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
        REQUIRE(client.status == ParseStatus::kDone);
        CHECK(client.kind == ReplyKind::kClientError);
        CHECK(client.text == "cannot increment or decrement non-numeric value");
        const ReplyHead server = parse_head("SERVER_ERROR out of memory storing object\r\n");
        CHECK(server.kind == ReplyKind::kServerError);
        CHECK(server.text == "out of memory storing object");
        const ReplyHead error = parse_head("ERROR\r\n");
        REQUIRE(error.status == ParseStatus::kDone);
        CHECK(error.kind == ReplyKind::kError);
        CHECK(error.text.empty());
        CHECK(error.used == 7);
    }
}

TEST_CASE("meta replies: what has not all come yet asks for more, byte by byte") {
    const std::string whole = "VA 5 f0\r\nhello\r\n";
    for (size_t cut = 0; cut < whole.size(); ++cut) {
        CAPTURE(cut);
        CHECK(parse_reply(std::string_view(whole).substr(0, cut)).status == ParseStatus::kNeedMore);
    }
    const Reply reply = parse_reply(whole);
    REQUIRE(reply.status == ParseStatus::kDone);
    CHECK(reply.value == "hello");
    CHECK(reply.used == whole.size());
    // The head alone is done as soon as its line is.
    CHECK(parse_head(std::string_view(whole).substr(0, 8)).status == ParseStatus::kNeedMore);
    CHECK(parse_head(std::string_view(whole).substr(0, 9)).status == ParseStatus::kDone);
    // A value that holds "\r\n" is taken by its size, not by the line.
    const Reply crlf = parse_reply("VA 4\r\na\r\nb\r\nEN\r\n");
    REQUIRE(crlf.status == ParseStatus::kDone);
    CHECK(crlf.value == "a\r\nb");
    CHECK(crlf.used == 12);
}

TEST_CASE("meta replies: garbage is invalid, not waited for") {
    CHECK(parse_head("HELLO\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("HDX\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("VA\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("VA x\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("VA -1\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("VA 99999999999\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("HD\n").status == ParseStatus::kInvalid);  // a bare newline
    CHECK(parse_head("\r\n").status == ParseStatus::kInvalid);
    CHECK(parse_head("H\x01\r\n").status == ParseStatus::kInvalid);
    // A value not followed by "\r\n": out of step.
    CHECK(parse_reply("VA 2\r\nabc\r\n").status == ParseStatus::kInvalid);
    // A line that never ends within what a reply line can be.
    CHECK(parse_head(std::string(kMaxReplyLine - 1, 'H')).status == ParseStatus::kNeedMore);
    CHECK(parse_head(std::string(kMaxReplyLine, 'H')).status == ParseStatus::kInvalid);
}

TEST_CASE("meta replies: a counter's value is decimal and fits 64 bits") {
    uint64_t number = 0;
    CHECK(parse_counter("0", number));
    CHECK(number == 0);
    CHECK(parse_counter("18446744073709551615", number));
    CHECK(number == UINT64_MAX);
    CHECK_FALSE(parse_counter("18446744073709551616", number));
    CHECK(parse_counter("9  ", number));
    CHECK(number == 9);
    CHECK_FALSE(parse_counter("", number));
    CHECK_FALSE(parse_counter("  ", number));
    CHECK_FALSE(parse_counter("12a", number));
    CHECK_FALSE(parse_counter("-1", number));
}
