#include "response.hpp"

#include <charconv>
#include <chrono>

namespace smp::protocol {

std::string_view reason_phrase(int status) {
    switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 206: return "Partial Content";
        case 301: return "Moved Permanently";
        case 304: return "Not Modified";
        case 308: return "Permanent Redirect";
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 410: return "Gone";
        case 412: return "Precondition Failed";
        case 414: return "URI Too Long";
        case 416: return "Range Not Satisfiable";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
    }
}

bool status_closes_connection(int status) {
    switch (status) {
        case 400:
        case 405:
        case 414:
        case 431:
        case 501:
        case 505: return true;
        default: return false;
    }
}

std::string_view DateCache::now() {
    const time_t now = time(nullptr);
    if (now != second_) {
        second_ = now;
        smp::http::format_http_date(now, text_);
    }
    return {text_, smp::http::kHttpDateLength};
}

void append_number(std::string& out, uint64_t value) {
    char digits[24];
    const auto [end, error] = std::to_chars(digits, digits + sizeof digits, value);
    out.append(digits, static_cast<size_t>(end - digits));
}

void append_status_line(std::string& out, int status, std::string_view date) {
    out += "HTTP/1.1 ";
    append_number(out, static_cast<uint64_t>(status));
    out += ' ';
    out += reason_phrase(status);
    out += "\r\nServer: ";
    out += kServerName;
    out += "\r\nDate: ";
    out += date;
    out += "\r\n";
}

void end_head(std::string& out, bool close, unsigned http_minor) {
    if (close)
        out += "Connection: close\r\n";
    else if (http_minor == 0)
        out += "Connection: keep-alive\r\n";
    out += "\r\n";
}

size_t error_body_length(int status) {
    // Three digits, a space, the phrase and a line end.
    return 3 + 1 + reason_phrase(status).size() + 1;
}

void append_error_body(std::string& out, int status) {
    append_number(out, static_cast<uint64_t>(status));
    out += ' ';
    out += reason_phrase(status);
    out += '\n';
}

void append_error_head(std::string& out, int status, std::string_view date) {
    append_status_line(out, status, date);
    out += "Content-Type: text/plain\r\nContent-Length: ";
    append_number(out, error_body_length(status));
    out += "\r\n";
    if (status == 429) {
        out += "Retry-After: ";
        append_number(out, kRetryAfterSeconds);
        out += "\r\n";
    }
}

int64_t wall_clock_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace smp::protocol
