#include "request_head.hpp"

namespace smp::http {
namespace {

// http_parser callbacks: record where things are; the parser owns no memory.
RequestHead& head_of(http_parser* parser) { return *static_cast<RequestHead*>(parser->data); }

int on_url(http_parser* parser, const char* at, size_t length) {
    head_of(parser).target = {at, length};
    return 0;
}

// RFC 9110 §5.6.2: a field name is a token. Debian builds http_parser in
// its lenient mode, which lets "Bad Name" through.
int on_header_field(http_parser* parser, const char* at, size_t length) {
    head_of(parser).current_field = {at, length};
    return is_token({at, length}) ? 0 : 1;
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
    switch (field_of(field)) {
        case Field::host:
            ++e.host_count;
            e.host = value;
            break;
        case Field::connection: e.connection.add(value); break;
        case Field::user_agent: e.user_agent = value; break;
        case Field::referer: e.referer = value; break;
        case Field::range:
            e.range_repeated = !e.range.empty();
            e.range = value;
            break;
        case Field::if_match: e.conditions.if_match = value; break;
        case Field::if_none_match: e.conditions.if_none_match = value; break;
        case Field::if_modified_since: e.conditions.if_modified_since = value; break;
        case Field::if_unmodified_since: e.conditions.if_unmodified_since = value; break;
        case Field::if_range: e.conditions.if_range = value; break;
        case Field::x_forwarded_for: e.x_forwarded_for = value; break;
        case Field::forwarded: e.forwarded = value; break;
        default: break;
    }
    return 0;
}

// One request per header block: the parser stops at the end of the first.
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

int parse_request_head(char* data, size_t length, RequestHead& head) {
    const std::string_view block{data, length};
    // A bare CR would let http_parser end the head before head_end did and
    // read the rest as a body or a second request (http1.hpp).
    const bool strict = !has_bare_cr(block) && !has_folded_line(block);
    http_parser_init(&head.parser, HTTP_REQUEST);
    head.parser.data = &head;
    const size_t parsed = strict ? http_parser_execute(&head.parser, &kParserSettings, data, length) : 0;
    const auto error = HTTP_PARSER_ERRNO(&head.parser);
    const bool parsed_all = strict && parsed == length && (error == HPE_OK || error == HPE_PAUSED);
    const int version_status = parsed_all ? check_request_version(block) : 400;
    for (auto view : {head.target, head.user_agent, head.referer, head.range, head.conditions.if_match,
                      head.conditions.if_none_match, head.conditions.if_modified_since,
                      head.conditions.if_unmodified_since, head.conditions.if_range})
        terminate_in_place(view);
    if (!parsed_all || head.target.empty()) return 400;
    return version_status;
}

}  // namespace smp::http
