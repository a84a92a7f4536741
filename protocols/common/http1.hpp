// HTTP/1 message syntax, read alike by every protocol module (RFC 9110,
// RFC 9112): where a head ends, what a field name is and which one it is,
// list fields, the request line's version, Host, Connection. http_parser
// reads the bytes; what its lenient Debian build lets through is judged here,
// once, so that http_download and forward answer the same head the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace smp::http {

// One past the blank line that ends a head (CRLF CRLF, or bare LFs as RFC
// 9112 §2.2 allows), or 0 while the head is incomplete.
size_t head_end(std::string_view data);

// The length of the empty lines (CRLF each) before a request line, which a
// server ignores (RFC 9112 §2.2) and a proxy never relays.
size_t leading_empty_lines(std::string_view data);

// RFC 9110 §5.6.2: tchar; a field name is a token.
bool is_token(std::string_view text);

// Field names and list elements compare without regard to ASCII case.
bool same_name(std::string_view a, std::string_view b);

// Without the optional white space (SP, HTAB) around it (RFC 9110 §5.6.3).
std::string_view trim(std::string_view text);

// The field names the modules act on, looked up once per field, as h2o's
// token table and lighttpd's http_header_hkey_get do: code compares ids.
enum class Field : uint8_t {
    other,
    authorization,
    connection,
    content_length,
    content_range,
    etag,
    forwarded,
    host,
    if_match,
    if_modified_since,
    if_none_match,
    if_range,
    if_unmodified_since,
    keep_alive,
    last_modified,
    proxy_authenticate,
    proxy_authorization,
    proxy_connection,
    range,
    referer,
    te,
    trailer,
    transfer_encoding,
    upgrade,
    user_agent,
    x_forwarded_for,
};
Field field_of(std::string_view name);

// Calls `each` with every element of the comma-separated `list`, trimmed.
// Empty elements are skipped: a recipient ignores them (RFC 9110 §5.6.1.2),
// so ", close" and "close," say "close".
template <typename Each>
void for_each_element(std::string_view list, Each each) {
    for (;;) {
        const size_t comma = list.find(',');
        const std::string_view element = trim(list.substr(0, comma));
        if (!element.empty()) each(element);
        if (comma == std::string_view::npos) return;
        list.remove_prefix(comma + 1);
    }
}

// True when the comma-separated `list` holds `token` as one of its elements.
bool list_contains(std::string_view list, std::string_view token);

// The options of a message's Connection fields (RFC 9110 §7.6.1) that decide
// whether the connection persists.
struct ConnectionOptions {
    bool close = false;
    bool keep_alive = false;
    void add(std::string_view connection_value);
};

// RFC 9112 §9.3: HTTP/1.1 persists unless "close" was said; HTTP/1.0 only
// with "keep-alive", and never with "close".
bool keeps_alive(unsigned http_minor, ConnectionOptions options);

// The HTTP-version of a request line (the text after its last space), which
// the lenient parser does not check letter by letter: 0 for "HTTP/1.x", 505
// for another major version, 400 for anything that is not one. Empty lines
// before the request line are skipped (RFC 9112 §2.2).
int check_request_version(std::string_view head);

// RFC 9112 §3.2 with RFC 3986 §3.2.2-3: uri-host [ ":" port ], where uri-host
// is an IP-literal in brackets, or a reg-name (an IPv4 address is one). An
// empty value is valid (a target without an authority).
bool is_valid_host(std::string_view value);

// RFC 9112 §3.2: a request with more than one Host field, or an invalid one,
// and an HTTP/1.1 request without one, get 400. `count` and `value` are the
// request's Host fields' count and the last one's value.
bool host_fields_valid(unsigned http_minor, int count, std::string_view value);

// The status of a head that did not fit in `max_header_size`: 414 when the
// request line alone is longer (no line end in what arrived), else 431.
int oversized_head_status(std::string_view received);

// True when a CR in `head` is not followed by an LF. http_parser takes the
// byte after a bare CR for the LF that ends a line, the head included, so
// the head it reads may end before the one that head_end() found, and what
// follows would be read as the body and its trailer fields (RFC 9112 §2.2:
// a bare CR makes the element invalid).
bool has_bare_cr(std::string_view head);

// obs-fold (RFC 9112 §5.2): a field line that starts with white space. Found
// on the bytes: after a field with an empty first line, http_parser reports
// the fold as the field's only value, and a callback cannot tell.
bool has_folded_line(std::string_view head);

}  // namespace smp::http
