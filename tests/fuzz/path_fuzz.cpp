// http_download's path normalisation against a plain model of it: decode
// once, then resolve the segments on a stack that must never go below the
// root. The input is the path part of a request target.
#include <string>
#include <vector>

#include "path.hpp"
#include "require.hpp"

using namespace smp::http;
using smp::fuzz::require;

namespace {

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

PathError model(std::string_view path, std::string& out) {
    out.clear();
    if (path.empty() || path.front() != '/') return PathError::bad_encoding;
    std::string decoded;
    for (size_t i = 0; i < path.size(); ++i) {
        if (path[i] != '%') {
            if (path[i] == '\0') return PathError::nul;
            decoded += path[i];
            continue;
        }
        if (i + 2 >= path.size() || hex(path[i + 1]) < 0 || hex(path[i + 2]) < 0) return PathError::bad_encoding;
        const char c = static_cast<char>(hex(path[i + 1]) * 16 + hex(path[i + 2]));
        if (c == '\0') return PathError::nul;
        decoded += c;
        i += 2;
    }
    std::vector<std::string> stack;
    size_t start = 0;
    while (start <= decoded.size()) {
        size_t end = decoded.find('/', start);
        if (end == std::string::npos) end = decoded.size();
        const std::string segment = decoded.substr(start, end - start);
        if (segment == "..") {
            if (stack.empty()) return PathError::escapes_root;
            stack.pop_back();
        } else if (!segment.empty() && segment != ".") {
            stack.push_back(segment);
        }
        start = end + 1;
    }
    for (const std::string& segment : stack) out += (out.empty() ? "" : "/") + segment;
    // A path that ends with a slash, or with a dot-segment (RFC 3986 §5.2.4:
    // "/a/." and "/a/b/.." are "/a/"), names a directory.
    const std::string last = decoded.substr(decoded.rfind('/') + 1);
    if (!out.empty() && decoded.size() > 1 && (last.empty() || last == "." || last == "..")) out += '/';
    return PathError::none;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view path = smp::fuzz::as_text(data, size);
    std::string out = "left over from an earlier request";
    const PathError error = normalize_path(path, out);
    std::string expected;
    require(error == model(path, expected), "the error is the model's");
    if (error != PathError::none) return 0;
    require(out == expected, "the path is the model's");

    // What the server opens is root + "/" + out: no segment may climb out.
    require(out.empty() || out.front() != '/', "the path is relative to the root");
    require(out.find('\0') == std::string::npos, "the path holds no NUL");
    std::string_view rest = out;
    if (rest.ends_with('/')) rest.remove_suffix(1);
    while (!rest.empty()) {
        const size_t slash = rest.find('/');
        const std::string_view segment = rest.substr(0, slash);
        require(!segment.empty() && segment != "." && segment != "..", "no empty, '.' or '..' segment");
        rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    }
    return 0;
}
