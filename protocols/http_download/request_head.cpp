#include "request_head.hpp"

#include <algorithm>

namespace smp::http {
namespace {

bool equals_ignoring_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return (x | 0x20) == (y | 0x20); });
}

// http_parser callbacks: record where things are; the parser owns no memory.
RequestHead& head_of(http_parser* parser) { return *static_cast<RequestHead*>(parser->data); }

int on_url(http_parser* parser, const char* at, size_t length) {
    head_of(parser).target = {at, length};
    return 0;
}

// RFC 9110 §5.6.2: a field name is a token. Debian builds http_parser in
// its lenient mode, which lets "Bad Name" through.
bool is_token(std::string_view text) {
    constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
    return !text.empty() && std::all_of(text.begin(), text.end(), [&](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               kSpecials.find(c) != std::string_view::npos;
    });
}

int on_header_field(http_parser* parser, const char* at, size_t length) {
    head_of(parser).current_field = {at, length};
    return is_token({at, length}) ? 0 : 1;
}

// The HTTP-version of the request line, which the lenient parser does not
// check letter by letter: 0 for "HTTP/1.x", else the status to answer with.
int check_version(const char* request, size_t length) {
    std::string_view line(request, length);
    // An empty line before the request line is ignored (RFC 9112 §2.2), as
    // http_parser ignores it.
    line.remove_prefix(std::min(line.find_first_not_of("\r\n"), line.size()));
    line = line.substr(0, line.find('\n'));
    if (line.ends_with('\r')) line.remove_suffix(1);
    const auto space = line.rfind(' ');
    if (space == std::string_view::npos) return 400;
    const std::string_view version = line.substr(space + 1);
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (version.size() != 8 || !version.starts_with("HTTP/") || !digit(version[5]) || version[6] != '.' ||
        !digit(version[7]))
        return 400;
    return version[5] == '1' ? 0 : 505;
}

int on_header_value(http_parser* parser, const char* at, size_t length) {
    RequestHead& e = head_of(parser);
    const std::string_view field = e.current_field;
    const std::string_view value{at, length};
    // The lenient parser lets two things through that are refused with 400,
    // as forward refuses them: a second value in a row, which is a folded line
    // (obs-fold, RFC 9112 §5.2), and a NUL, CR or LF in a value (RFC 9110 §5.5).
    if (field.empty() || value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) return 1;
    e.current_field = {};
    if (equals_ignoring_case(field, "host")) {
        ++e.host_count;
    } else if (equals_ignoring_case(field, "user-agent")) {
        e.user_agent = value;
    } else if (equals_ignoring_case(field, "referer")) {
        e.referer = value;
    } else if (equals_ignoring_case(field, "range")) {
        e.range_repeated = !e.range.empty();
        e.range = value;
    } else if (equals_ignoring_case(field, "if-match")) {
        e.conditions.if_match = value;
    } else if (equals_ignoring_case(field, "if-none-match")) {
        e.conditions.if_none_match = value;
    } else if (equals_ignoring_case(field, "if-modified-since")) {
        e.conditions.if_modified_since = value;
    } else if (equals_ignoring_case(field, "if-unmodified-since")) {
        e.conditions.if_unmodified_since = value;
    } else if (equals_ignoring_case(field, "if-range")) {
        e.conditions.if_range = value;
    } else if (equals_ignoring_case(field, "x-forwarded-for")) {
        e.x_forwarded_for = value;
    } else if (equals_ignoring_case(field, "forwarded")) {
        e.forwarded = value;
    }
    return 0;
}

// One request per header block: the parser stops at the end of the first.
// The lenient parser takes "\r" plus any byte for a line end, so it can end a
// head where find_header_end does not and read the rest as a second request,
// which would otherwise be answered in the first one's place.
int on_message_complete(http_parser* parser) {
    http_parser_pause(parser, 1);
    return 0;
}

const http_parser_settings kParserSettings = [] {
    http_parser_settings settings{};
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_message_complete = on_message_complete;
    return settings;
}();

// The views end before a CR, LF or space of the header block, all parsed
// already: writing a NUL there turns them into C strings for the records.
void terminate_in_place(std::string_view view) {
    if (view.data() != nullptr) const_cast<char*>(view.data())[view.size()] = '\0';
}

}  // namespace

size_t find_header_end(const char* data, size_t length) {
    for (size_t i = 0; i < length; ++i) {
        if (data[i] != '\n') continue;
        if (i + 1 < length && data[i + 1] == '\n') return i + 2;
        if (i + 2 < length && data[i + 1] == '\r' && data[i + 2] == '\n') return i + 3;
    }
    return 0;
}

// obs-fold (RFC 9112 §5.2): a field line that starts with white space. Found
// on the bytes: after a field with an empty first line, http_parser reports
// the fold as the field's only value, and on_header_value cannot tell.
bool has_folded_line(std::string_view head) {
    for (size_t at = head.find("\r\n"); at != std::string_view::npos; at = head.find("\r\n", at + 2))
        if (at + 2 < head.size() && (head[at + 2] == ' ' || head[at + 2] == '\t')) return true;
    return false;
}

int parse_request_head(char* data, size_t length, RequestHead& head) {
    http_parser_init(&head.parser, HTTP_REQUEST);
    head.parser.data = &head;
    const size_t parsed = http_parser_execute(&head.parser, &kParserSettings, data, length);
    const auto error = HTTP_PARSER_ERRNO(&head.parser);
    const bool parsed_all = parsed == length && (error == HPE_OK || error == HPE_PAUSED);
    const int version_status = parsed_all ? check_version(data, length) : 400;
    for (auto view : {head.target, head.user_agent, head.referer, head.range, head.conditions.if_match,
                      head.conditions.if_none_match, head.conditions.if_modified_since,
                      head.conditions.if_unmodified_since, head.conditions.if_range})
        terminate_in_place(view);
    if (!parsed_all || head.target.empty() || has_folded_line({data, length})) return 400;
    return version_status;
}

}  // namespace smp::http
