#include "path.hpp"

#include <cstring>

namespace smp::http {
namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

bool percent_decode(std::string_view text, std::string& out, bool plus_is_space) {
    out.clear();
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            const int high = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
            const int low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
            if (high < 0 || low < 0) return false;
            c = static_cast<char>(high * 16 + low);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out.push_back(c);
    }
    return true;
}

void append_percent_encoded(std::string& out, std::string_view text, bool keep_slashes) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        const bool unreserved = (byte >= 'A' && byte <= 'Z') || (byte >= 'a' && byte <= 'z') ||
                                (byte >= '0' && byte <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved || (keep_slashes && c == '/')) {
            out += c;
        } else {
            out += '%';
            out += kHex[byte >> 4];
            out += kHex[byte & 0x0f];
        }
    }
}

std::optional<std::string> query_parameter(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const size_t equals = pair.find('=');
        if (pair.substr(0, equals) == name) {
            std::string value;
            if (!percent_decode(equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1), value,
                                true))
                return std::nullopt;
            return value;
        }
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

PathError normalize_path(std::string_view path, std::string& out) {
    out.clear();
    if (path.empty() || path.front() != '/') return PathError::bad_encoding;
    // Decode first, into `out`, then normalise in place: "%2e%2e" and "%2f"
    // are dots and slashes like any other once decoded.
    // The first fault in the path decides: a NUL before a bad escape is a
    // NUL (percent_decode leaves what it decoded before the escape).
    const bool decoded = percent_decode(path, out, false);
    if (out.find('\0') != std::string::npos) return PathError::nul;
    if (!decoded) return PathError::bad_encoding;
    // RFC 3986 §5.2.4: a path that ends in a dot-segment ends with its
    // slash once the segment is removed ("/file/." and "/file/a/.." are
    // "/file/"), so it names a directory, never the file.
    const size_t last_slash = out.rfind('/');
    const std::string_view last_segment = std::string_view(out).substr(last_slash + 1);
    const bool trailing_slash = out.size() > 1 && (last_segment.empty() || last_segment == "." || last_segment == "..");

    size_t written = 0;  // `out` is rewritten in place: segments only ever shrink
    size_t position = 0;
    while (position < out.size()) {
        size_t end = out.find('/', position);
        if (end == std::string::npos) end = out.size();
        const std::string_view segment(out.data() + position, end - position);
        if (segment == "..") {
            if (written == 0) return PathError::escapes_root;
            const size_t slash = out.rfind('/', written - 1);
            written = slash == std::string::npos ? 0 : slash;
        } else if (!segment.empty() && segment != ".") {
            if (written > 0) out[written++] = '/';
            std::memmove(out.data() + written, segment.data(), segment.size());
            written += segment.size();
        }
        position = end + 1;
    }
    out.resize(written);
    if (trailing_slash && written > 0) out.push_back('/');
    return PathError::none;
}

}  // namespace smp::http
