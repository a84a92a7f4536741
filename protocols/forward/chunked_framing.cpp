#include "chunked_framing.hpp"

#include <algorithm>

namespace smp::forward {
namespace {

// Far beyond any body, and far from any parser's overflow (nginx refuses a
// size past 2^59, http_parser past 2^60).
constexpr uint64_t kMaxChunkSize = uint64_t{1} << 48;

int hex_value(unsigned char byte) {
    if (byte >= '0' && byte <= '9') return byte - '0';
    if (byte >= 'a' && byte <= 'f') return byte - 'a' + 10;
    if (byte >= 'A' && byte <= 'F') return byte - 'A' + 10;
    return -1;
}

bool is_token_byte(unsigned char byte) {
    return (byte >= '0' && byte <= '9') || (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(byte)) != std::string_view::npos;
}

// Text of a chunk extension or of a trailer's value: visible bytes, space,
// tab and obs-text; no other control character.
bool is_text_byte(unsigned char byte) { return byte == '\t' || (byte >= 0x20 && byte != 0x7f); }

}  // namespace

void ChunkedFraming::start(size_t max_line) {
    *this = ChunkedFraming();
    max_line_ = max_line;
}

size_t ChunkedFraming::feed(std::string_view bytes) {
    size_t at = 0;
    while (at < bytes.size() && state_ != State::done && state_ != State::failed) {
        if (state_ == State::data) {
            const uint64_t take = std::min<uint64_t>(remaining_, bytes.size() - at);
            at += static_cast<size_t>(take);
            remaining_ -= take;
            if (remaining_ == 0) state_ = State::data_cr;
            continue;
        }
        const auto byte = static_cast<unsigned char>(bytes[at++]);
        if (++line_length_ > max_line_) {
            state_ = State::failed;
            break;
        }
        switch (state_) {
            case State::size_first:
            case State::size: {
                const int digit = hex_value(byte);
                if (digit >= 0) {
                    remaining_ = remaining_ * 16 + static_cast<uint64_t>(digit);
                    state_ = remaining_ > kMaxChunkSize ? State::failed : State::size;
                } else if (state_ == State::size && byte == ';') {
                    state_ = State::extension;
                } else if (state_ == State::size && byte == '\r') {
                    state_ = State::size_lf;
                } else {
                    state_ = State::failed;
                }
                break;
            }
            case State::extension:
                if (byte == '\r')
                    state_ = State::size_lf;
                else if (!is_text_byte(byte))
                    state_ = State::failed;
                break;
            case State::size_lf:
                line_length_ = 0;
                if (byte != '\n')
                    state_ = State::failed;
                else
                    state_ = remaining_ == 0 ? State::trailer_start : State::data;
                break;
            case State::data_cr: state_ = byte == '\r' ? State::data_lf : State::failed; break;
            case State::data_lf:
                line_length_ = 0;
                state_ = byte == '\n' ? State::size_first : State::failed;
                break;
            case State::trailer_start:
                if (byte == '\r')
                    state_ = State::end_lf;
                else
                    state_ = is_token_byte(byte) ? State::trailer_name : State::failed;
                break;
            case State::trailer_name:
                if (byte == ':')
                    state_ = State::trailer_value;
                else if (!is_token_byte(byte))
                    state_ = State::failed;
                break;
            case State::trailer_value:
                if (byte == '\r')
                    state_ = State::trailer_lf;
                else if (!is_text_byte(byte))
                    state_ = State::failed;
                break;
            case State::trailer_lf:
                line_length_ = 0;
                state_ = byte == '\n' ? State::trailer_start : State::failed;
                break;
            case State::end_lf: state_ = byte == '\n' ? State::done : State::failed; break;
            case State::data:
            case State::done:
            case State::failed: break;
        }
    }
    return at;
}

}  // namespace smp::forward
