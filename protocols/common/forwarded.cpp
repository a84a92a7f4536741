#include "forwarded.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace smp::http {
namespace {

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

// Copies `text` into `out` if it is an IPv4 or IPv6 address.
bool to_address(std::string_view text, ClientAddress& out) {
    if (text.empty() || text.size() >= out.size()) return false;
    std::memcpy(out.data(), text.data(), text.size());
    out[text.size()] = '\0';
    unsigned char bytes[16];
    return inet_pton(AF_INET, out.data(), bytes) == 1 || inet_pton(AF_INET6, out.data(), bytes) == 1;
}

// The node of a Forwarded `for=` value: quotes, brackets and port removed.
std::string_view node_of(std::string_view value) {
    value = trim(value);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (!value.empty() && value.front() == '[') {
        const auto close = value.find(']');
        return close == std::string_view::npos ? std::string_view{} : value.substr(1, close - 1);
    }
    const auto colon = value.find(':');
    return colon == std::string_view::npos ? value : value.substr(0, colon);
}

// The `for=` node of one Forwarded element ("for=1.2.3.4;proto=https").
std::string_view for_of(std::string_view element) {
    while (!element.empty()) {
        const auto semicolon = element.find(';');
        const auto pair = trim(element.substr(0, semicolon));
        if (pair.size() > 4 && (pair[0] | 0x20) == 'f' && (pair[1] | 0x20) == 'o' && (pair[2] | 0x20) == 'r' &&
            pair[3] == '=')
            return node_of(pair.substr(4));
        if (semicolon == std::string_view::npos) break;
        element.remove_prefix(semicolon + 1);
    }
    return {};
}

// Walks the comma-separated `list` from the right.
bool walk(std::string_view list, bool forwarded_syntax, const std::function<bool(const char*)>& trusted,
          ClientAddress& client) {
    bool found = false;
    while (!list.empty()) {
        const auto comma = list.rfind(',');
        const auto item = list.substr(comma == std::string_view::npos ? 0 : comma + 1);
        const auto address = forwarded_syntax ? for_of(item) : trim(item);
        ClientAddress candidate{};
        if (!to_address(address, candidate)) return found;  // beyond this nothing can be believed
        client = candidate;
        found = true;
        if (!trusted(candidate.data())) return true;
        if (comma == std::string_view::npos) break;
        list = list.substr(0, comma);
    }
    return found;
}

}  // namespace

bool forwarded_client(std::string_view forwarded, std::string_view x_forwarded_for,
                      const std::function<bool(const char*)>& trusted, ClientAddress& client) {
    if (!trim(forwarded).empty()) return walk(forwarded, true, trusted, client);
    if (!trim(x_forwarded_for).empty()) return walk(x_forwarded_for, false, trusted, client);
    return false;
}

}  // namespace smp::http
