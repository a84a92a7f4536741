#include "chunked_framing.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

using namespace smp::forward;

namespace {

struct Checked {
    size_t length = 0;
    bool done = false;
    bool failed = false;
};

// The body fed at once, and then a byte at a time: both must agree.
Checked check(std::string_view body) {
    ChunkedFraming whole;
    whole.start(64);
    Checked at_once{whole.feed(body), whole.done(), whole.failed()};
    ChunkedFraming bytewise;
    bytewise.start(64);
    size_t length = 0;
    while (length < body.size() && !bytewise.done() && !bytewise.failed())
        length += bytewise.feed(body.substr(length, 1));
    CHECK(at_once.length == length);
    CHECK(at_once.done == bytewise.done());
    CHECK(at_once.failed == bytewise.failed());
    return at_once;
}

bool accepted(std::string_view body) {
    const Checked checked = check(body);
    return checked.done && !checked.failed && checked.length == body.size();
}

bool refused(std::string_view body) { return check(body).failed; }

}  // namespace

TEST_CASE("a strict chunked body ends where its last CRLF does") {
    CHECK(accepted("5\r\nhello\r\n0\r\n\r\n"));
    CHECK(accepted("0\r\n\r\n"));
    CHECK(accepted("00A\r\n0123456789\r\n000\r\n\r\n"));
    CHECK(accepted("5;name=value;q=\"a b\"\r\nhello\r\n0\r\n\r\n"));
    CHECK(accepted("5\r\nhello\r\n0\r\nX-Sum: abc\r\nY: \r\n\r\n"));
    // What follows is the next request's, not the body's.
    const Checked pipelined = check("1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
    CHECK(pipelined.done);
    CHECK(pipelined.length == 11);
}

TEST_CASE("an unfinished chunked body takes every byte and waits") {
    const Checked partial = check("10\r\nhalf of it");
    CHECK_FALSE(partial.done);
    CHECK_FALSE(partial.failed);
    CHECK(partial.length == 14);
}

TEST_CASE("framing that parsers read differently is refused") {
    CHECK(refused("0;\n\r\nGET http://a/smuggled HTTP/1.1\r\n\r\n"));  // an extension ended by a bare LF
    CHECK(refused("5\nhello\r\n0\r\n\r\n"));                           // a chunk line ended by a bare LF
    CHECK(refused("5\rXhello\r\n0\r\n\r\n"));                          // a bare CR
    CHECK(refused("5\r\nhelloXY0\r\n\r\n"));                           // no CRLF after the data
    CHECK(refused("5\r\nhello\n0\r\n\r\n"));
    CHECK(refused("5 \r\nhello\r\n0\r\n\r\n"));  // white space after the size
    CHECK(refused(" 5\r\nhello\r\n0\r\n\r\n"));
    CHECK(refused("-5\r\nhello\r\n0\r\n\r\n"));
    CHECK(refused("0x5\r\nhello\r\n0\r\n\r\n"));
    CHECK(refused("\r\n0\r\n\r\n"));
    CHECK(refused("5;a\x01\r\nhello\r\n0\r\n\r\n"));  // a control character in an extension
    CHECK(refused("0\r\nX: y\nZ: w\r\n\r\n"));        // a trailer line ended by a bare LF
    CHECK(refused("0\r\nX: y\r\n z\r\n\r\n"));        // a folded trailer line
    CHECK(refused("0\r\nBad Name: y\r\n\r\n"));
    CHECK(refused(std::string_view("0\r\nX: a\0b\r\n\r\n", 13)));
    CHECK(refused("0\r\n\rX"));
    CHECK(refused("1000000000001\r\n"));  // past 2^48
}

TEST_CASE("a chunk line or a trailer line longer than the limit is refused") {
    CHECK(refused("5;" + std::string(100, 'x') + "\r\nhello\r\n0\r\n\r\n"));
    CHECK(refused("0\r\nX: " + std::string(100, 'x') + "\r\n\r\n"));
    CHECK(accepted("5;" + std::string(50, 'x') + "\r\nhello\r\n0\r\nX: " + std::string(50, 'x') + "\r\n\r\n"));
    // The data is no line: a chunk larger than the limit is fine.
    CHECK(accepted("c8\r\n" + std::string(200, 'd') + "\r\n0\r\n\r\n"));
}
