#include "heads.hpp"

#include <strings.h>

#include <algorithm>
#include <charconv>

namespace smp::forward {
namespace {

using http::for_each_element;
using http::list_contains;
using http::trim;

using http::Field;

// Fields that never cross a proxy. Transfer-Encoding is not among them: the
// body is relayed with its framing, so its framing field goes along with it.
bool is_always_hop_by_hop(Field field) {
    switch (field) {
        case Field::connection:
        case Field::keep_alive:
        case Field::proxy_connection:
        case Field::te:
        case Field::upgrade:
        case Field::proxy_authorization:
        case Field::proxy_authenticate: return true;
        default: return false;
    }
}

// The fields that frame a message's body: never dropped while the body is
// relayed by them.
bool is_framing(Field field) { return field == Field::content_length || field == Field::transfer_encoding; }

void append_field(std::string& out, std::string_view name, std::string_view value) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
}

// Appends the values of every field called `name`, joined as one list, then `added`.
void append_joined(std::string& out, std::string_view name, std::span<const HeaderField> fields,
                   std::string_view added_prefix, std::string_view added, std::string_view added_suffix) {
    out += name;
    out += ": ";
    for (const HeaderField& field : fields) {
        if (!same_name(field.name, name) || trim(field.value).empty()) continue;
        out += trim(field.value);
        out += ", ";
    }
    out += added_prefix;
    out += added;
    out += added_suffix;
    out += "\r\n";
}

bool parse_number(std::string_view text, uint64_t& value) {
    if (text.empty()) return false;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::string_view head_problem(std::string_view head) {
    if (has_bare_cr(head)) return "a bare CR";
    if (http::has_folded_line(head)) return "a folded line (obs-fold)";
    for (size_t i = 0; i < head.size(); ++i) {
        switch (head[i]) {
            case '\0': return "a NUL in the head";
            case '\n': return "a line ended by a bare LF";
            case '\r': ++i; break;  // an LF follows: has_bare_cr
            case '\t': break;
            default:
                // RFC 9110 §5.5: no control character in a field line.
                if (static_cast<unsigned char>(head[i]) < 0x20 || head[i] == 0x7f) return "a control character";
                break;
        }
    }
    return {};
}

bool is_request_target(std::string_view target) {
    if (target.empty()) return false;
    for (const char ch : target) {
        const auto byte = static_cast<unsigned char>(ch);
        if (byte <= 0x20 || byte == 0x7f) return false;
    }
    return true;
}

std::string_view request_fields_problem(std::span<const HeaderField> fields, unsigned http_minor) {
    int content_lengths = 0;
    int transfer_encodings = 0;
    for (const HeaderField& field : fields) {
        const Field id = http::field_of(field.name);
        if (id == Field::content_length) {
            ++content_lengths;
            uint64_t length = 0;
            if (!parse_number(trim(field.value), length)) return "a Content-Length that is not one number";
        } else if (id == Field::transfer_encoding) {
            ++transfer_encodings;
            // Only the chunked coding, alone: what every origin frames alike.
            if (!same_name(trim(field.value), "chunked")) return "a Transfer-Encoding other than chunked";
        } else if (id == Field::connection) {
            bool names_framing = false;
            for_each_element(field.value, [&](std::string_view option) {
                const Field named = http::field_of(option);
                names_framing = names_framing || is_framing(named) || named == Field::host;
            });
            if (names_framing) return "a Connection option naming Content-Length, Transfer-Encoding or Host";
        }
    }
    if (content_lengths > 1) return "several Content-Length fields";
    if (transfer_encodings > 1) return "several Transfer-Encoding fields";
    if (transfer_encodings > 0 && content_lengths > 0) return "both Transfer-Encoding and Content-Length";
    if (transfer_encodings > 0 && http_minor == 0) return "a Transfer-Encoding in HTTP/1.0";
    return {};
}

bool is_status_line(std::string_view line, unsigned status) {
    if (line.size() < 12 || !line.starts_with("HTTP/1.") || line[7] < '0' || line[7] > '9' || line[8] != ' ')
        return false;
    const char code[4] = {static_cast<char>('0' + status / 100 % 10), static_cast<char>('0' + status / 10 % 10),
                          static_cast<char>('0' + status % 10), '\0'};
    if (status > 999 || line.substr(9, 3) != code) return false;
    if (line.size() == 12) return true;
    if (line[12] != ' ') return false;
    for (const unsigned char c : line.substr(13))
        if (c != '\t' && (c < 0x20 || c == 0x7f)) return false;
    return true;
}

std::string_view first_line(std::string_view head) {
    // An empty line before the start line is ignored (RFC 9112 §2.2), as
    // http_parser ignores it: the start line is the first line with text.
    head.remove_prefix(std::min(head.find_first_not_of("\r\n"), head.size()));
    // The lenient parser ends the line at a bare CR too: so does this, so
    // that a CR never reaches the other side (RFC 9112 §2.2).
    return head.substr(0, head.find_first_of("\r\n"));
}

bool is_hop_by_hop(std::string_view name, std::span<const HeaderField> fields) {
    const Field id = http::field_of(name);
    if (is_framing(id)) return false;
    if (is_always_hop_by_hop(id)) return true;
    for (const HeaderField& field : fields)
        if (http::field_of(field.name) == Field::connection && list_contains(field.value, name)) return true;
    return false;
}

void build_upstream_head(const RequestLine& line, std::span<const HeaderField> fields, std::string_view client_ip,
                         std::string& out) {
    out.clear();
    out += line.method;
    out += ' ';
    out += line.target;
    out += line.http_minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n";
    for (const HeaderField& field : fields) {
        if (is_hop_by_hop(field.name, fields) || same_name(field.name, "x-forwarded-for") ||
            same_name(field.name, "forwarded"))
            continue;
        append_field(out, field.name, trim(field.value));
    }
    append_joined(out, "X-Forwarded-For", fields, "", client_ip, "");
    // RFC 7239 §6: an IPv6 node is bracketed, and then the value is quoted.
    const bool ipv6 = client_ip.find(':') != std::string_view::npos;
    append_joined(out, "Forwarded", fields, ipv6 ? "for=\"[" : "for=", client_ip,
                  ipv6 ? "]\";proto=http" : ";proto=http");
    out += "\r\n";
}

void build_client_head(std::string_view status_line, std::span<const HeaderField> fields, ClientConnection connection,
                       std::string& out) {
    out += status_line;
    out += "\r\n";
    for (const HeaderField& field : fields)
        if (!is_hop_by_hop(field.name, fields)) append_field(out, field.name, field.value);
    if (connection == ClientConnection::close) out += "Connection: close\r\n";
    if (connection == ClientConnection::keep_alive) out += "Connection: keep-alive\r\n";
    out += "\r\n";
}

ContentRange parse_content_range(std::string_view value) {
    ContentRange range;
    value = trim(value);
    if (value.size() < 6 || strncasecmp(value.data(), "bytes ", 6) != 0) return range;
    value = trim(value.substr(6));
    const auto slash = value.find('/');
    if (slash == std::string_view::npos) return range;
    const std::string_view span = value.substr(0, slash);
    const std::string_view total = value.substr(slash + 1);
    uint64_t number = 0;
    if (total != "*") {
        if (!parse_number(total, number) || number > INT64_MAX) return range;
        range.total = static_cast<int64_t>(number);
    }
    if (span == "*") {
        range.valid = range.total >= 0;  // "bytes */*" says nothing
        return range;
    }
    const auto dash = span.find('-');
    if (dash == std::string_view::npos || !parse_number(span.substr(0, dash), range.first) ||
        !parse_number(span.substr(dash + 1), range.last) || range.last < range.first)
        return range;
    if (range.total >= 0 && range.last >= static_cast<uint64_t>(range.total)) return range;
    range.valid = true;
    range.satisfied = true;
    return range;
}

}  // namespace smp::forward
