// One head parser for every protocol module: http_parser reads the bytes,
// these callbacks gather what it found, and parse_request_head judges a
// request head by the rules of http1.hpp. http_download picks the fields it
// answers by; forward relays them; both read the same head the same way.
#pragma once

#include <http_parser.h>

#include <string_view>
#include <vector>

#include "http1.hpp"

namespace smp::http {

// One header field as received: views into the head's bytes, and its id.
struct HeaderField {
    std::string_view name;
    std::string_view value;
    Field id = Field::other;
};

// What the callbacks gather of a head. `parser.data` points at it; a module
// that needs more in its callbacks derives from it.
struct ParsedHead {
    std::vector<HeaderField> fields;  // in order
    std::string_view target_view;     // of a request
    bool bad_field = false;           // a name that is not a token, a folded line, a NUL, CR or LF in a value
    bool last_was_value = false;      // the parser's previous callback
    bool request_complete = false;    // the request ended here: the parser is paused after it

    // The value of the last field with `id`, or empty.
    std::string_view field(Field id) const;
    int count(Field id) const;
    // The options of every Connection field, together.
    ConnectionOptions connection_options() const;
    // Starts over for the next head; the vector keeps its room.
    void clear_head();
};

// The callbacks, for modules that build settings of their own (forward's
// for a response). A head is parsed in one call, so a second value in a row
// is a folded line (obs-fold), refused (RFC 9112 §5.2).
int on_header_field(http_parser* parser, const char* at, size_t length);
int on_header_value(http_parser* parser, const char* at, size_t length);

// Settings that parse a request, head and then body, into a ParsedHead:
// the parser pauses at the end of the request, so that the bytes after it
// stay for the next one.
extern const http_parser_settings kRequestParserSettings;

// Parses the request head `block` (whose end head_end found, empty lines
// before it dropped or not) with `parser` into `head`: 0 when it can be
// answered, else the status that refuses it: 400, or 505 for an HTTP
// version other than 1.x. A bare CR or a folded line anywhere is 400 (the
// parser would read them otherwise, http1.hpp). Host and Connection are for
// the caller to judge (host_fields_valid, keeps_alive). The parser is left
// where the head ended, ready for a body.
int parse_request_head(std::string_view block, http_parser& parser, ParsedHead& head);

}  // namespace smp::http
