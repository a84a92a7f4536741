#include "head_parser.hpp"

#include <algorithm>

namespace smp::http {
namespace {

ParsedHead& head_of(http_parser* parser) { return *static_cast<ParsedHead*>(parser->data); }

int on_url(http_parser* parser, const char* at, size_t length) {
    head_of(parser).target_view = {at, length};
    return 0;
}

int on_request_complete(http_parser* parser) {
    head_of(parser).request_complete = true;
    http_parser_pause(parser, 1);
    return 0;
}

}  // namespace

std::string_view ParsedHead::field(Field id) const {
    std::string_view found;
    for (const HeaderField& f : fields)
        if (f.id == id) found = f.value;
    return found;
}

int ParsedHead::count(Field id) const {
    return static_cast<int>(
        std::count_if(fields.begin(), fields.end(), [id](const HeaderField& f) { return f.id == id; }));
}

ConnectionOptions ParsedHead::connection_options() const {
    ConnectionOptions options;
    for (const HeaderField& f : fields)
        if (f.id == Field::connection) options.add(f.value);
    return options;
}

void ParsedHead::clear_head() {
    fields.clear();
    target_view = {};
    bad_field = false;
    last_was_value = false;
    request_complete = false;
}

// Debian builds http_parser in its lenient mode, which lets "Bad Name"
// through: a field name must be a token (RFC 9110 §5.6.2).
int on_header_field(http_parser* parser, const char* at, size_t length) {
    ParsedHead& head = head_of(parser);
    const std::string_view name{at, length};
    if (!is_token(name)) head.bad_field = true;
    head.fields.push_back({name, {}, field_of(name)});
    head.last_was_value = false;
    return 0;
}

int on_header_value(http_parser* parser, const char* at, size_t length) {
    ParsedHead& head = head_of(parser);
    const std::string_view value{at, length};
    // RFC 9110 §5.5: no NUL, CR or LF in a value.
    if (head.fields.empty() || head.last_was_value || value.find_first_of(std::string_view("\r\n\0", 3)) != value.npos)
        head.bad_field = true;
    else
        head.fields.back().value = value;
    head.last_was_value = true;
    return 0;
}

const http_parser_settings kRequestParserSettings = [] {
    http_parser_settings settings{};
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_message_complete = on_request_complete;
    return settings;
}();

int parse_request_head(std::string_view block, http_parser& parser, ParsedHead& head) {
    head.clear_head();
    http_parser_init(&parser, HTTP_REQUEST);
    parser.data = &head;
    if (has_bare_cr(block) || has_folded_line(block)) return 400;
    const size_t parsed = http_parser_execute(&parser, &kRequestParserSettings, block.data(), block.size());
    const auto error = HTTP_PARSER_ERRNO(&parser);
    if (parsed != block.size() || (error != HPE_OK && error != HPE_PAUSED) || head.bad_field ||
        head.target_view.empty())
        return 400;
    return check_request_version(block);
}

}  // namespace smp::http
