#include "meta_reply.hpp"

#include <array>
#include <utility>

namespace smp::memcache {

namespace {

// The codes of a reply line, with the flags or the text that may follow them.
constexpr std::array<std::pair<std::string_view, ReplyKind>, 9> kCodes = {{
    {"HD", ReplyKind::kStored},
    {"NF", ReplyKind::kNotFound},
    {"NS", ReplyKind::kNotStored},
    {"EX", ReplyKind::kExists},
    {"EN", ReplyKind::kMiss},
    {"MN", ReplyKind::kNoOp},
    {"CLIENT_ERROR", ReplyKind::kClientError},
    {"SERVER_ERROR", ReplyKind::kServerError},
    {"ERROR", ReplyKind::kError},
}};

ReplyHead head_with(ParseStatus status) {
    ReplyHead head;
    head.status = status;
    return head;
}

Reply reply_with(ParseStatus status) {
    Reply reply;
    reply.status = status;
    return reply;
}

ReplyHead invalid() { return head_with(ParseStatus::kInvalid); }

// `line` is `code`, or `code` and a space and what follows (flags or text).
bool starts_token(std::string_view line, std::string_view code) {
    return line.starts_with(code) && (line.size() == code.size() || line[code.size()] == ' ');
}

// VA's size: decimal digits up to the next space or the end of the line.
bool parse_size(std::string_view digits, uint64_t& size) {
    if (digits.empty() || digits.size() > 10) return false;
    size = 0;
    for (const char c : digits) {
        if (c < '0' || c > '9') return false;
        size = size * 10 + static_cast<uint64_t>(c - '0');
    }
    return size <= kMaxValueSize;
}

}  // namespace

ReplyHead parse_head(std::string_view bytes) {
    const size_t newline = bytes.substr(0, kMaxReplyLine).find('\n');
    if (newline == std::string_view::npos)
        return bytes.size() >= kMaxReplyLine ? invalid() : head_with(ParseStatus::kNeedMore);
    if (newline == 0 || bytes[newline - 1] != '\r') return invalid();
    const std::string_view line = bytes.substr(0, newline - 1);
    // memcached writes printable ASCII only; anything else means the bytes
    // are not where a reply should start (a value's body, say).
    for (const char c : line)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return invalid();

    ReplyHead head;
    head.status = ParseStatus::kDone;
    head.used = newline + 1;
    if (starts_token(line, "VA")) {
        const std::string_view rest = line.substr(line.size() > 2 ? 3 : 2);
        if (!parse_size(rest.substr(0, rest.find(' ')), head.value_size)) return invalid();
        head.kind = ReplyKind::kValue;
        return head;
    }
    for (const auto& [code, kind] : kCodes) {
        if (!starts_token(line, code)) continue;
        head.kind = kind;
        if (kind == ReplyKind::kClientError || kind == ReplyKind::kServerError || kind == ReplyKind::kError)
            head.text = line.size() > code.size() ? line.substr(code.size() + 1) : std::string_view{};
        return head;
    }
    return invalid();
}

Reply parse_reply(std::string_view bytes) {
    const ReplyHead head = parse_head(bytes);
    Reply reply;
    reply.status = head.status;
    if (head.status != ParseStatus::kDone) return reply;
    reply.kind = head.kind;
    reply.text = head.text;
    reply.used = head.used;
    if (head.kind != ReplyKind::kValue) return reply;
    const std::string_view rest = bytes.substr(head.used);
    if (rest.size() < head.value_size + 2) return reply_with(ParseStatus::kNeedMore);
    if (rest.substr(head.value_size, 2) != "\r\n") return reply_with(ParseStatus::kInvalid);
    reply.value = rest.substr(0, head.value_size);
    reply.used += head.value_size + 2;
    return reply;
}

bool parse_counter(std::string_view value, uint64_t& number) {
    // A counter that went down keeps its length, padded with spaces; ma
    // sends the number alone, but a value read with mg would have them.
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty() || value.size() > 20) return false;
    number = 0;
    for (const char c : value) {
        if (c < '0' || c > '9') return false;
        const uint64_t digit = static_cast<uint64_t>(c - '0');
        if (number > (UINT64_MAX - digit) / 10) return false;
        number = number * 10 + digit;
    }
    return true;
}

}  // namespace smp::memcache
