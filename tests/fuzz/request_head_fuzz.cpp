// http_download's request head: head_end, then read_request_head on
// the header block, as WorkerState::start_exchange does.
#include <cstring>
#include <vector>

#include "request_head.hpp"
#include "require.hpp"

using namespace smp::http;
using smp::fuzz::require;

namespace {

// A view that the records use as a C string: it lies inside the block, the
// byte after it (still inside) is the NUL written in place, and it holds no
// NUL of its own that would cut the string short. An empty one is the empty
// C string, wherever it lies.
void check_terminated(std::string_view view, const std::vector<char>& block) {
    if (view.data() == nullptr) return;
    require(view.empty() || (view.data() >= block.data() && view.data() + view.size() < block.data() + block.size()),
            "a view and its NUL lie inside the header block");
    require(view.data()[view.size()] == '\0', "a view is NUL-terminated in place");
    require(std::memchr(view.data(), '\0', view.size()) == nullptr, "a view's C string is the whole view");
    require(view.find_first_of("\r\n") == std::string_view::npos, "a view holds no line end");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* bytes = reinterpret_cast<const char*>(data);
    const size_t end = head_end({bytes, size});
    require(end <= size, "the header end lies inside what was read");
    if (end == 0) return 0;
    require(bytes[end - 1] == '\n', "a header block ends with a line end");
    require(head_end({bytes, end - 1}) == 0, "the header end is the first blank line");

    // The block alone, in a buffer of its size: a NUL written past it is an
    // overflow that ASan reports.
    std::vector<char> block(bytes, bytes + end);
    RequestHead head;
    const int status = read_request_head(block.data(), block.size(), head);
    require(status == 0 || status == 400 || status == 505, "the status is 0, 400 or 505");
    for (std::string_view view : {head.target, head.user_agent, head.referer, head.range, head.conditions.if_match,
                                  head.conditions.if_none_match, head.conditions.if_modified_since,
                                  head.conditions.if_unmodified_since, head.conditions.if_range})
        check_terminated(view, block);
    for (const HeaderField& field : head.fields)
        require(field.id == field_of(field.name), "a field's id is the one its name maps to");
    if (status == 505) require(head.parser.http_major != 1, "505 only for a version other than 1.x");
    if (status != 0) return 0;

    require(!head.target.empty(), "an accepted request has a target");
    require(head.parser.http_major == 1, "an accepted request is HTTP/1.x");
    require(std::strcmp(http_method_str(static_cast<http_method>(head.parser.method)), "<unknown>") != 0,
            "an accepted request has a known method");
    require(head.target.find_first_of(" \r\n") == std::string_view::npos, "the target holds no space or line end");
    // The record's protocol comes from the parser's minor version: the
    // version checked in the request line must be the one the parser read.
    std::string_view line(bytes, end);
    line.remove_prefix(line.find_first_not_of("\r\n"));  // the empty line the parser skips
    line = line.substr(0, line.find_first_of("\r\n"));
    require(line.size() >= 8 && static_cast<unsigned>(line.back() - '0') == head.parser.http_minor,
            "the request line's version is the parser's");
    return 0;
}
