// The head of a request, parsed from the bytes received and without a
// connection: http_parser reads the request line and the fields, and the
// checks its lenient Debian build leaves out are made here.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <string_view>

#include "conditional.hpp"
#include "http1.hpp"

namespace smp::http {

// What a request head said; views into the bytes it was parsed from,
// NUL-terminated in place once parse_request_head has returned.
struct RequestHead {
    http_parser parser{};
    std::string_view current_field;
    std::string_view target;
    std::string_view user_agent;
    std::string_view referer;
    std::string_view range;
    std::string_view forwarded;        // Forwarded (RFC 7239)
    std::string_view x_forwarded_for;  // X-Forwarded-For
    std::string_view host;             // the last Host field's value
    Conditions conditions;
    ConnectionOptions connection;
    int host_count = 0;
    bool range_repeated = false;
};

// Parses the header block `data[0, length)`, whose end head_end found, into
// `head`: 0 when the request can be answered, else the status that refuses
// it (400, or 505 for an HTTP-version other than 1.x). Host and Connection
// are judged by the caller, which knows the version (http1.hpp). The views of
// `head` are NUL-terminated in place, on the byte after each, which is a
// CR, LF or space of the block, so that the records can use them as C strings.
int parse_request_head(char* data, size_t length, RequestHead& head);

}  // namespace smp::http
