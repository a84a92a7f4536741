#include "request_head.hpp"

namespace smp::http {
namespace {

// The views end before a CR, LF or space of the header block, all parsed
// already: writing a NUL there turns them into C strings for the records.
// An empty value's view starts at the next line (where http_parser marks
// it): it becomes the empty C string instead, so that the NUL does not land
// on the first letter of the next field's name.
void terminate_in_place(std::string_view& view) {
    if (view.data() == nullptr) return;
    if (view.empty())
        view = std::string_view("", 0);
    else
        const_cast<char*>(view.data())[view.size()] = '\0';
}

}  // namespace

int read_request_head(char* data, size_t length, RequestHead& head) {
    const int status = parse_request_head({data, length}, head.parser, head);
    head.target = head.target_view;
    for (const HeaderField& field : head.fields) {
        switch (field.id) {
            case Field::user_agent: head.user_agent = field.value; break;
            case Field::referer: head.referer = field.value; break;
            case Field::range:
                head.range_repeated = !head.range.empty();
                head.range = field.value;
                break;
            case Field::if_match: head.conditions.if_match = field.value; break;
            case Field::if_none_match: head.conditions.if_none_match = field.value; break;
            case Field::if_modified_since: head.conditions.if_modified_since = field.value; break;
            case Field::if_unmodified_since: head.conditions.if_unmodified_since = field.value; break;
            case Field::if_range: head.conditions.if_range = field.value; break;
            case Field::x_forwarded_for: head.x_forwarded_for = field.value; break;
            case Field::forwarded: head.forwarded = field.value; break;
            default: break;
        }
    }
    for (std::string_view* view :
         {&head.target, &head.user_agent, &head.referer, &head.range, &head.conditions.if_match,
          &head.conditions.if_none_match, &head.conditions.if_modified_since, &head.conditions.if_unmodified_since,
          &head.conditions.if_range})
        terminate_in_place(*view);
    return status;
}

}  // namespace smp::http
