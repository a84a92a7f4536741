// The framing of a chunked request body, checked strictly before it is
// relayed as received. http_parser ends a chunk line at a CR and takes any
// byte for the LF after it, or for the CRLF after a chunk's data; nginx ends
// a chunk line at a bare LF too. A body that two parsers could cut in two
// different places is refused, so the origin reads the body to the byte
// where this proxy did (docs/forward.md, "Request framing and smuggling").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace smp::forward {

class ChunkedFraming {
   public:
    // A new body; a chunk line or a trailer line longer than `max_line` is refused.
    void start(size_t max_line);

    // Checks the next bytes of the body and returns how many of them belong
    // to it: all of them until its end. Stops at the first byte outside of
    // RFC 9112 §7.1 (bare CR or LF, white space before a chunk's ';' or in a
    // trailer's name, a folded trailer line, a control character), and
    // failed() tells so.
    size_t feed(std::string_view bytes);

    bool done() const { return state_ == State::done; }
    bool failed() const { return state_ == State::failed; }

   private:
    enum class State {
        size_first,  // the first hex digit of a chunk size
        size,        // more digits, ';' or the CR
        extension,   // after ';', up to the CR
        size_lf,     // the LF of a chunk line
        data,        // `remaining_` bytes of data
        data_cr,     // the CRLF after the data
        data_lf,
        trailer_start,  // a trailer field line, or the CR of the empty line
        trailer_name,
        trailer_value,
        trailer_lf,
        end_lf,  // the LF of the empty line that ends the body
        done,
        failed,
    };

    State state_ = State::size_first;
    uint64_t remaining_ = 0;  // chunk size, then the data bytes still to come
    size_t line_length_ = 0;
    size_t max_line_ = 8192;
};

}  // namespace smp::forward
