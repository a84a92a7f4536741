// What the parts of forward's connection state machine share (connection.cpp:
// the pump and the end of an exchange; request.cpp, response.cpp, origin.cpp,
// deadlines.cpp): its constants and small helpers. Not seen outside forward.
#pragma once

#include <http_parser.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "connection.hpp"

namespace smp::forward::detail {

constexpr const char* kModule = "forward";
// Moves per wake-up of one connection before the others get their turn; the
// level-triggered poll brings it back at once.
constexpr int kMaxRounds = 64;
constexpr uint64_t kLingerMs = 2'000;
// While the origin keeps failing, a line every so often says how many times.
constexpr uint64_t kFailureLogIntervalMs = 60'000;

using smp::protocol::wall_clock_us;

// http_parser's settings for a response (a request's are the common
// parser's, kRequestParserSettings): the parser stops at the end of the
// response, so that the bytes after it are not taken for its body.
extern const http_parser_settings kResponseSettings;

bool would_block(int error);
bool peer_gone(int error);
bool has_room(const RelayBuffer& buffer);
bool parsed_cleanly(const http_parser& parser);
const char* c_string(const std::string& text);
// Sends what is left of a head, then the bytes of a buffer that are ready,
// in one call, through `tls` when the peer speaks it: -1 with errno on error.
// `then`: as for smp::tls::Stream::write.
ssize_t send_head_and_body(int fd, smp::tls::Stream* tls, const std::string& head, size_t head_sent, const char* body,
                           size_t body_length, smp::tls::Stream::Then then = smp::tls::Stream::Then::unknown);
// Over TLS, bytes taken may wait in the record buffer, and an exchange or a
// stream has not delivered them until they went.
inline bool tls_pending(const std::unique_ptr<smp::tls::Stream>& tls) { return tls && tls->pending(); }

}  // namespace smp::forward::detail
