// The heads a proxy rewrites: the request it passes to the origin and the
// response it passes back. Pure functions over views, so that they are
// tested without sockets.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "head_parser.hpp"
#include "http1.hpp"

namespace smp::forward {

// The HTTP/1 syntax every module reads alike (protocols/common/http1.hpp).
// One header field as received; views into the head's buffer.
using http::has_bare_cr;
using http::head_end;
using http::HeaderField;
using http::is_token;
using http::leading_empty_lines;
using http::same_name;

// Why a request head that http_parser takes is still not relayed, or empty
// when it is strict: a line ended by a bare LF or CR, a NUL or another
// control character but a tab, or a folded line (obs-fold). http_parser lets
// each of them through, and an origin may read them otherwise
// (docs/forward.md, "Request framing and smuggling").
std::string_view head_problem(std::string_view head);

// A request target as relayed: no space, no control character.
bool is_request_target(std::string_view target);

// Why a request's fields leave its framing ambiguous (RFC 9112 §6.1, §6.3),
// or empty: Transfer-Encoding other than one `chunked` (or in HTTP/1.0),
// with Content-Length, several Content-Length fields or one that is not a
// number, or a Connection option naming Content-Length, Transfer-Encoding or
// Host (which would make them hop-by-hop).
std::string_view request_fields_problem(std::span<const HeaderField> fields, unsigned http_minor);

// The start line of a head, without its line end: the first line that is
// not empty, since a head may follow an empty line, up to its CR or LF.
std::string_view first_line(std::string_view head);

// RFC 9112 §4: `HTTP/1.d SP 3DIGIT [SP reason-phrase]` carrying `status`, the
// reason phrase of tabs, spaces and visible characters only. http_parser reads
// the version loosely ("HTT*\01.1" passes), so a head it takes may start
// otherwise, and such a line is not relayed to a client.
bool is_status_line(std::string_view line, unsigned status);

// True for the fields that belong to one connection (RFC 9110 §7.6.1): the
// fixed list, and those that the message's Connection fields name, but never
// Content-Length or Transfer-Encoding: the body is relayed with its framing.
bool is_hop_by_hop(std::string_view name, std::span<const HeaderField> fields);

// A request line as parsed: the method's name, the target, HTTP/1.minor.
struct RequestLine {
    std::string_view method;
    std::string_view target;
    unsigned http_minor = 1;
};

// The head for the origin, written anew from what was parsed (never the bytes
// as received): the request line (HTTP/1.0, or HTTP/1.1 for any later minor),
// the end-to-end fields, and X-Forwarded-For and Forwarded with `client_ip`
// appended to what the client sent (both joined into one field each).
void build_upstream_head(const RequestLine& line, std::span<const HeaderField> fields, std::string_view client_ip,
                         std::string& out);

enum class ClientConnection { keep_alive_implied, keep_alive, close };

// Appends the head for the client (after an interim 1xx one, if any): the
// status line as received, the end-to-end fields, and the Connection field
// this proxy's own decision needs.
void build_client_head(std::string_view status_line, std::span<const HeaderField> fields, ClientConnection connection,
                       std::string& out);

// Content-Range of a response (RFC 9110 §14.4): "bytes 0-99/1000", or
// "bytes */1000" on a 416. `total` is -1 when the sender wrote '*'.
struct ContentRange {
    bool valid = false;
    bool satisfied = false;  // a range was sent; false for "bytes */total"
    uint64_t first = 0;
    uint64_t last = 0;
    int64_t total = -1;
};
ContentRange parse_content_range(std::string_view value);

}  // namespace smp::forward
