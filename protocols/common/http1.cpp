#include "http1.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <string>

namespace smp::http {
namespace {

constexpr std::string_view kTokenSpecials = "!#$%&'*+-.^_`|~";

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c | 0x20) : c; }

struct FieldEntry {
    std::string_view name;  // lower case
    Field id;
};

constexpr std::array kFields = {
    FieldEntry{"authorization", Field::authorization},
    FieldEntry{"connection", Field::connection},
    FieldEntry{"content-length", Field::content_length},
    FieldEntry{"content-range", Field::content_range},
    FieldEntry{"etag", Field::etag},
    FieldEntry{"forwarded", Field::forwarded},
    FieldEntry{"host", Field::host},
    FieldEntry{"if-match", Field::if_match},
    FieldEntry{"if-modified-since", Field::if_modified_since},
    FieldEntry{"if-none-match", Field::if_none_match},
    FieldEntry{"if-range", Field::if_range},
    FieldEntry{"if-unmodified-since", Field::if_unmodified_since},
    FieldEntry{"keep-alive", Field::keep_alive},
    FieldEntry{"last-modified", Field::last_modified},
    FieldEntry{"proxy-authenticate", Field::proxy_authenticate},
    FieldEntry{"proxy-authorization", Field::proxy_authorization},
    FieldEntry{"proxy-connection", Field::proxy_connection},
    FieldEntry{"range", Field::range},
    FieldEntry{"referer", Field::referer},
    FieldEntry{"te", Field::te},
    FieldEntry{"trailer", Field::trailer},
    FieldEntry{"transfer-encoding", Field::transfer_encoding},
    FieldEntry{"upgrade", Field::upgrade},
    FieldEntry{"user-agent", Field::user_agent},
    FieldEntry{"x-forwarded-for", Field::x_forwarded_for},
};

// RFC 3986 §2.3, §2.2: unreserved and sub-delims, the characters of a
// reg-name besides pct-encoded ones.
bool is_reg_name_char(char c) {
    constexpr std::string_view kOthers = "-._~!$&'()*+,;=";
    return is_alpha(c) || is_digit(c) || kOthers.find(c) != std::string_view::npos;
}

bool is_reg_name(std::string_view name) {
    for (size_t i = 0; i < name.size(); ++i) {
        if (name[i] == '%') {
            if (i + 2 >= name.size() || !is_hex(name[i + 1]) || !is_hex(name[i + 2])) return false;
            i += 2;
        } else if (!is_reg_name_char(name[i])) {
            return false;
        }
    }
    return true;
}

// RFC 3986 §3.2.2: "[" ( IPv6address / IPvFuture ) "]", brackets included.
bool is_ip_literal(std::string_view literal) {
    if (literal.size() < 3 || literal.front() != '[' || literal.back() != ']') return false;
    const std::string_view inside = literal.substr(1, literal.size() - 2);
    if (inside.front() == 'v' || inside.front() == 'V') {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        const size_t dot = inside.find('.');
        if (dot == std::string_view::npos || dot < 2 || dot + 1 == inside.size()) return false;
        if (!std::all_of(inside.begin() + 1, inside.begin() + static_cast<std::ptrdiff_t>(dot), is_hex)) return false;
        return std::all_of(inside.begin() + static_cast<std::ptrdiff_t>(dot) + 1, inside.end(),
                           [](char c) { return c == ':' || is_reg_name_char(c); });
    }
    if (inside.size() > 45) return false;  // INET6_ADDRSTRLEN - 1
    const std::string text(inside);
    in6_addr address{};
    return inet_pton(AF_INET6, text.c_str(), &address) == 1;
}

}  // namespace

size_t head_end(std::string_view data) {
    for (size_t line_end = data.find('\n'); line_end != std::string_view::npos;
         line_end = data.find('\n', line_end + 1)) {
        size_t next = line_end + 1;
        if (next < data.size() && data[next] == '\r') ++next;
        if (next < data.size() && data[next] == '\n') return next + 1;
    }
    return 0;
}

size_t leading_empty_lines(std::string_view data) {
    size_t length = 0;
    while (data.substr(length, 2) == "\r\n") length += 2;
    return length;
}

bool is_token(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return is_alpha(c) || is_digit(c) || kTokenSpecials.find(c) != std::string_view::npos;
    });
}

bool same_name(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view text) {
    const size_t first = text.find_first_not_of(" \t");
    if (first == std::string_view::npos) return {};
    return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

Field field_of(std::string_view name) {
    for (const FieldEntry& entry : kFields)
        if (entry.name.size() == name.size() && same_name(entry.name, name)) return entry.id;
    return Field::other;
}

bool list_contains(std::string_view list, std::string_view token) {
    bool found = false;
    for_each_element(list, [&](std::string_view element) { found = found || same_name(element, token); });
    return found;
}

void ConnectionOptions::add(std::string_view connection_value) {
    for_each_element(connection_value, [this](std::string_view option) {
        if (same_name(option, "close")) close = true;
        if (same_name(option, "keep-alive")) keep_alive = true;
    });
}

bool keeps_alive(unsigned http_minor, ConnectionOptions options) {
    if (options.close) return false;
    return http_minor >= 1 || options.keep_alive;
}

int check_request_version(std::string_view head) {
    std::string_view line = head;
    line.remove_prefix(std::min(line.find_first_not_of("\r\n"), line.size()));
    line = line.substr(0, line.find('\n'));
    if (line.ends_with('\r')) line.remove_suffix(1);
    const size_t space = line.rfind(' ');
    if (space == std::string_view::npos) return 400;
    const std::string_view version = line.substr(space + 1);
    if (version.size() != 8 || !version.starts_with("HTTP/") || !is_digit(version[5]) || version[6] != '.' ||
        !is_digit(version[7]))
        return 400;
    return version[5] == '1' ? 0 : 505;
}

bool is_valid_host(std::string_view value) {
    std::string_view host = value;
    std::string_view port;
    if (!host.empty() && host.front() == '[') {
        const size_t close = host.find(']');
        if (close == std::string_view::npos) return false;
        if (close + 1 < host.size()) {
            if (host[close + 1] != ':') return false;
            port = host.substr(close + 2);
        }
        host = host.substr(0, close + 1);
        if (!is_ip_literal(host)) return false;
    } else {
        const size_t colon = host.find(':');
        if (colon != std::string_view::npos) {
            port = host.substr(colon + 1);
            host = host.substr(0, colon);
        }
        if (!is_reg_name(host)) return false;
    }
    return std::all_of(port.begin(), port.end(), is_digit);
}

bool host_fields_valid(unsigned http_minor, int count, std::string_view value) {
    if (count > 1) return false;
    if (count == 0) return http_minor == 0;
    return is_valid_host(trim(value));
}

int oversized_head_status(std::string_view received) {
    received.remove_prefix(leading_empty_lines(received));
    return received.find('\n') == std::string_view::npos ? 414 : 431;
}

bool has_bare_cr(std::string_view head) {
    for (size_t cr = head.find('\r'); cr != std::string_view::npos; cr = head.find('\r', cr + 1))
        if (cr + 1 >= head.size() || head[cr + 1] != '\n') return true;
    return false;
}

bool has_folded_line(std::string_view head) {
    for (size_t lf = head.find('\n'); lf != std::string_view::npos; lf = head.find('\n', lf + 1))
        if (lf + 1 < head.size() && (head[lf + 1] == ' ' || head[lf + 1] == '\t')) return true;
    return false;
}

}  // namespace smp::http
