// forward's heads: the input is an origin's response head. It is found with
// head_end, parsed with http_parser as forward/response.cpp does (with the
// common parser's callbacks, protocols/common/head_parser.hpp), and the
// heads built from it must themselves parse back to the same fields.
#include <http_parser.h>

#include <algorithm>
#include <string>
#include <vector>

#include "heads.hpp"
#include "require.hpp"

using namespace smp::forward;
using smp::fuzz::require;
using smp::http::ParsedHead;

namespace {

int on_headers_complete(http_parser* parser) {
    const unsigned status = parser->status_code;
    return parser->type == HTTP_RESPONSE && (status / 100 == 1 || status == 204 || status == 304) ? 1 : 0;
}

int on_message_complete(http_parser* parser) {
    http_parser_pause(parser, 1);
    return 0;
}

const http_parser_settings kSettings = [] {
    http_parser_settings settings{};
    settings.on_header_field = smp::http::on_header_field;
    settings.on_header_value = smp::http::on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_message_complete = on_message_complete;
    return settings;
}();

// Parses a whole head as forward does; false when forward refuses it.
bool parse_head(std::string_view head, http_parser_type type, http_parser& parser, ParsedHead& parsed) {
    http_parser_init(&parser, type);
    parser.data = &parsed;
    const size_t length = http_parser_execute(&parser, &kSettings, head.data(), head.size());
    const auto error = HTTP_PARSER_ERRNO(&parser);
    return length == head.size() && (error == HPE_OK || error == HPE_PAUSED) && !parsed.bad_field;
}

std::string_view field_value(const std::vector<HeaderField>& fields, std::string_view name) {
    std::string_view found;
    for (const HeaderField& field : fields)
        if (same_name(field.name, name)) found = field.value;
    return found;
}

size_t count_fields(const std::vector<HeaderField>& fields, std::string_view name) {
    return static_cast<size_t>(
        std::count_if(fields.begin(), fields.end(), [&](const HeaderField& f) { return same_name(f.name, name); }));
}

std::string_view trim(std::string_view text) {
    const auto first = text.find_first_not_of(" \t");
    if (first == std::string_view::npos) return {};
    return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

void check_client_head(std::string_view status_line, const std::vector<HeaderField>& fields, unsigned status) {
    std::vector<HeaderField> end_to_end;
    for (const HeaderField& field : fields)
        if (!is_hop_by_hop(field.name, fields)) end_to_end.push_back(field);
    for (ClientConnection connection :
         {ClientConnection::keep_alive_implied, ClientConnection::keep_alive, ClientConnection::close}) {
        std::string out = "an interim head\r\n\r\n";
        const size_t start = out.size();
        build_client_head(status_line, fields, connection, out);
        const std::string_view head = std::string_view(out).substr(start);
        require(head.starts_with(std::string(status_line) + "\r\n"), "the client head starts with the status line");
        require(head_end(head) == head.size(), "the client head is one whole head");

        http_parser parser;
        ParsedHead reparsed;
        require(parse_head(head, HTTP_RESPONSE, parser, reparsed), "the client head parses");
        require(parser.status_code == status, "the client head keeps the status");
        const size_t added = connection == ClientConnection::keep_alive_implied ? 0 : 1;
        require(reparsed.fields.size() == end_to_end.size() + added, "the client head has the end-to-end fields");
        for (size_t i = 0; i < end_to_end.size(); ++i)
            require(reparsed.fields[i].name == end_to_end[i].name &&
                        trim(reparsed.fields[i].value) == trim(end_to_end[i].value),
                    "each end-to-end field is passed on as received");
        require(count_fields(reparsed.fields, "connection") == added, "Connection is this proxy's own");
    }
}

void check_upstream_head(std::vector<HeaderField> fields, std::string_view client_ip) {
    // A request's framing fields are judged before its head is built
    // (forward refuses what would frame it ambiguously): here, the rest. The
    // Debian http_parser takes any name that starts with Transfer-Encoding
    // ("Transfer-Encoding-X") for Transfer-Encoding, so those go too.
    std::erase_if(fields, [](const HeaderField& field) {
        return same_name(field.name, "content-length") || same_name(field.name.substr(0, 17), "transfer-encoding");
    });
    std::string out;
    build_upstream_head({"GET", "/file", 1}, fields, client_ip, out);
    require(head_end(out) == out.size(), "the upstream head is one whole head");
    http_parser parser;
    ParsedHead reparsed;
    require(parse_head(out, HTTP_REQUEST, parser, reparsed), "the upstream head parses");
    require(count_fields(reparsed.fields, "x-forwarded-for") == 1 && count_fields(reparsed.fields, "forwarded") == 1,
            "one X-Forwarded-For and one Forwarded");
    require(field_value(reparsed.fields, "x-forwarded-for").ends_with(client_ip),
            "X-Forwarded-For ends with the client");
    // The proxy's own X-Forwarded-For and Forwarded are sent even when the
    // client's Connection named them: that made the client's hop-by-hop.
    for (const HeaderField& field : reparsed.fields)
        if (!same_name(field.name, "x-forwarded-for") && !same_name(field.name, "forwarded"))
            require(!is_hop_by_hop(field.name, fields), "no hop-by-hop field of the client reaches the origin");
}

void check_content_range(std::string_view value) {
    const ContentRange range = parse_content_range(value);
    if (!range.valid) return;
    std::string text = "bytes ";
    if (range.satisfied) {
        require(range.first <= range.last, "a Content-Range's first byte is before its last");
        require(range.total < 0 || range.last < static_cast<uint64_t>(range.total), "it lies within the total");
        text += std::to_string(range.first) + "-" + std::to_string(range.last);
    } else {
        require(range.total >= 0, "an unsatisfied Content-Range has a total");
        text += "*";
    }
    text += "/" + (range.total < 0 ? std::string("*") : std::to_string(range.total));
    const ContentRange again = parse_content_range(text);
    require(again.valid && again.satisfied == range.satisfied && again.first == range.first &&
                again.last == range.last && again.total == range.total,
            "a Content-Range formats and parses back");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input = smp::fuzz::as_text(data, size);
    const size_t end = head_end(input);
    if (end == 0) return 0;
    const std::string block(input.substr(0, end));
    const std::string_view head = block;

    http_parser parser;
    ParsedHead parsed;
    if (has_bare_cr(head) || !parse_head(head, HTTP_RESPONSE, parser, parsed) || parser.status_code == 101) return 0;
    const std::string_view status_line = first_line(head);
    // forward answers 502 to a head whose first line is not a status line.
    if (!is_status_line(status_line, parser.status_code)) return 0;
    require(status_line.find_first_of("\r\n") == std::string_view::npos, "the status line holds no line end");
    check_client_head(status_line, parsed.fields, parser.status_code);
    // As a request's, these fields reach build_upstream_head only when the
    // head has no control character (head_problem; forward answers 400).
    if (head_problem(head).empty()) {
        check_upstream_head(parsed.fields, "192.0.2.1");
        check_upstream_head(parsed.fields, "2001:db8::1");
    }
    check_content_range(field_value(parsed.fields, "content-range"));
    for (const HeaderField& field : parsed.fields) check_content_range(field.value);
    return 0;
}
