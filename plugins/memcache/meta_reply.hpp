// meta_reply: the replies of memcached's meta text protocol (ma, mg, ms), read
// from the front of the bytes a connection has received. Pure: no I/O and no
// state, so that every shape of reply (a line split across reads, a value
// that has not all come, an error line, garbage) is tested without a server.
//
// A reply is a head line ending in "\r\n"; after a VA head come the value's
// bytes and "\r\n". The client reads a large value straight into its
// caller's buffer, so it asks for the head alone (parse_head) and takes the
// body itself; parse_reply takes a whole reply, body included, for a caller
// that has it all in one buffer (small values, and the tests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace smp::memcache {

enum class ReplyKind {
    kValue,        // VA <size> [flags]: a value of <size> bytes follows
    kStored,       // HD [flags]: done (ma without v, ms)
    kNotFound,     // NF: no such key (ma)
    kNotStored,    // NS: not stored (ms)
    kExists,       // EX: the CAS did not match (not asked for here)
    kMiss,         // EN: no such key (mg)
    kNoOp,         // MN: the answer to mn
    kClientError,  // CLIENT_ERROR <text>: this command was refused
    kServerError,  // SERVER_ERROR <text>: the server could not do it
    kError,        // ERROR: the command was not understood
};

enum class ParseStatus {
    kNeedMore,  // not all of it has come yet
    kDone,      // a reply, `used` bytes of the input
    kInvalid,   // not a reply: the connection is out of step
};

// A reply line longer than this is not one memcached sends to these
// commands: the connection is out of step.
constexpr size_t kMaxReplyLine = 1024;
// A value whose size memcached announces beyond this is garbage: an item
// holds at most 1 GiB whatever memcached's -I says.
constexpr uint64_t kMaxValueSize = uint64_t{1} << 30;

struct ReplyHead {
    ParseStatus status = ParseStatus::kNeedMore;
    ReplyKind kind = ReplyKind::kError;
    uint64_t value_size = 0;  // kValue: the bytes that follow the head, without their "\r\n"
    size_t used = 0;          // kDone: the head line's bytes, "\r\n" included
    std::string_view text;    // the error's text (CLIENT_ERROR, SERVER_ERROR), a view into the input
};

struct Reply {
    ParseStatus status = ParseStatus::kNeedMore;
    ReplyKind kind = ReplyKind::kError;
    std::string_view value;  // kValue: the value, a view into the input
    std::string_view text;   // the error's text
    size_t used = 0;         // kDone: head, value and the value's "\r\n"
};

// The head line at the front of `bytes`.
ReplyHead parse_head(std::string_view bytes);

// A whole reply at the front of `bytes`, a value's body and its "\r\n" too.
Reply parse_reply(std::string_view bytes);

// A counter's value as ma v sends it: decimal digits only, at most 2^64-1.
// False when it is anything else.
bool parse_counter(std::string_view value, uint64_t& number);

}  // namespace smp::memcache
