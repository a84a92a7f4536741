// The head of a request as http_download answers it: the common head parser
// (protocols/common/head_parser.hpp) reads it, and the fields the answer
// depends on are picked out here, without a connection, NUL-terminated in
// place for the records.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <string_view>

#include "conditional.hpp"
#include "head_parser.hpp"
#include "http1.hpp"

namespace smp::http {

// What a request head said; views into the bytes it was parsed from,
// NUL-terminated in place once read_request_head has returned.
struct RequestHead : ParsedHead {
    http_parser parser{};
    std::string_view target;
    std::string_view user_agent;
    std::string_view referer;
    std::string_view range;
    std::string_view forwarded;        // Forwarded (RFC 7239)
    std::string_view x_forwarded_for;  // X-Forwarded-For
    Conditions conditions;
    bool range_repeated = false;
};

// Reads the header block `data[0, length)`, whose end head_end found, into
// `head`: 0 when the request can be answered, else the status that refuses
// it (400, or 505 for an HTTP-version other than 1.x). Host and Connection
// are judged by the caller, which knows the version (http1.hpp). The views
// of `head` are NUL-terminated in place, on the byte after each, which is a
// CR, LF or space of the block, so that the records can use them as C strings.
int read_request_head(char* data, size_t length, RequestHead& head);

}  // namespace smp::http
