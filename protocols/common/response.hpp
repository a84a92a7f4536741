// What every protocol module writes alike in the responses it makes itself:
// the status line with its reason phrase, Server and a Date formatted once a
// second, the Connection field, and the small text body of an error.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

#include "conditional.hpp"

namespace smp::protocol {

constexpr std::string_view kServerName = "smprotocol";
// Retry-After of a 429: when a client refused by a limit may try again.
constexpr int kRetryAfterSeconds = 10;

// RFC 9110 §15: the reason phrase this server writes for `status`.
std::string_view reason_phrase(int status);

// Whether a response of this server's own ends its connection: the request
// could not be understood (400, 414, 431, 505), or its body, which is not
// read, would be taken for the next request (405, 501).
bool status_closes_connection(int status);

// The current time as an HTTP-date, formatted at most once a second.
class DateCache {
   public:
    std::string_view now();

   private:
    char text_[smp::http::kHttpDateLength] = {};
    time_t second_ = 0;
};

// Appends `value` in decimal.
void append_number(std::string& out, uint64_t value);

// Appends "HTTP/1.1 <status> <phrase>", then Server and Date.
void append_status_line(std::string& out, int status, std::string_view date);

// Appends the Connection field when one is needed (close; keep-alive to an
// HTTP/1.0 client, whose connection persists only when told), then the
// empty line that ends the head.
void end_head(std::string& out, bool close, unsigned http_minor);

// The text/plain body of an error this server answers itself:
// "<status> <phrase>\n"; its length, and the body appended.
size_t error_body_length(int status);
void append_error_body(std::string& out, int status);

// Appends the head of such an error up to its own fields: the status line,
// Server, Date, Content-Type, Content-Length (of error_body_length) and, on
// a 429, Retry-After. The caller adds its fields, then end_head().
void append_error_head(std::string& out, int status, std::string_view date);

// Microseconds since the epoch, as records carry them.
int64_t wall_clock_us();

}  // namespace smp::protocol
