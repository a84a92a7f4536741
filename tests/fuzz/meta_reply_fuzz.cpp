// memcached's replies as the memcache plugin reads them: a stream of replies
// taken from the front, as they arrive in pieces. The parser is the only
// thing between the bytes of a server (or of whatever answers on its port)
// and the queue of a worker's waiting calls, so it must never read past what
// it was given, never stall on what it has, and read a stream split anywhere
// as it reads it whole.
#include <cstdlib>
#include <string>

#include "meta_reply.hpp"
#include "require.hpp"

using namespace smp::memcache;
using smp::fuzz::require;

namespace {

// The whole replies at the front of `bytes`, as (kind, bytes used) pairs,
// until one is incomplete or invalid; `end` says which.
struct Walk {
    std::string kinds;
    size_t used = 0;
    ParseStatus end = ParseStatus::kNeedMore;
};

Walk walk(std::string_view bytes) {
    Walk w;
    for (;;) {
        const Reply reply = parse_reply(bytes.substr(w.used));
        const ReplyHead head = parse_head(bytes.substr(w.used));
        if (reply.status != ParseStatus::kDone) {
            w.end = reply.status;
            // A head that is whole but invalid is invalid as a reply too.
            if (head.status == ParseStatus::kInvalid)
                require(reply.status == ParseStatus::kInvalid, "head and reply agree on garbage");
            return w;
        }
        require(reply.used >= 4 && reply.used <= bytes.size() - w.used, "a reply uses what it was given");
        require(head.status == ParseStatus::kDone && head.kind == reply.kind, "parse_head reads parse_reply's head");
        if (reply.kind == ReplyKind::kValue) {
            require(head.value_size == reply.value.size(), "the value is as long as its head says");
            require(reply.used == head.used + head.value_size + 2, "a value is its head, its bytes and CRLF");
            require(reply.value.data() == bytes.data() + w.used + head.used, "the value follows its head");
        } else {
            require(reply.used == head.used, "a reply without a value is its head");
        }
        w.kinds += static_cast<char>('a' + static_cast<int>(reply.kind));
        w.used += reply.used;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes = smp::fuzz::as_text(data, size);
    const Walk whole = walk(bytes);
    require(whole.used <= bytes.size(), "the replies use no more than the bytes");
    // Any prefix reads as the whole does, up to where the prefix ends: the
    // replies it holds whole, then "need more" (or the same garbage).
    for (size_t cut : {size / 3, size / 2, size - size / 4}) {
        const Walk part = walk(bytes.substr(0, cut));
        require(whole.kinds.compare(0, part.kinds.size(), part.kinds) == 0, "a prefix reads the same replies");
        if (part.end == ParseStatus::kInvalid) require(whole.end == ParseStatus::kInvalid, "garbage is garbage whole");
    }
    // A counter is decimal digits, and means what strtoull reads; a counter
    // that went down keeps its length, padded with spaces at its end.
    uint64_t number = 0;
    const std::string text(bytes.substr(0, 24));
    if (parse_counter(text, number)) {
        const std::string digits = text.substr(0, text.find_last_not_of(' ') + 1);
        require(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos, "a counter is digits");
        require(std::strtoull(digits.c_str(), nullptr, 10) == number, "a counter is its decimal value");
    }
    return 0;
}
