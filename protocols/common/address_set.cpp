#include "address_set.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <optional>
#include <string>

namespace smp {
namespace {

// 16 bytes of `text`, IPv4 mapped into IPv6 (::ffff:a.b.c.d); `v4` tells which it was.
std::optional<std::array<uint8_t, 16>> parse_address(std::string_view text, bool& v4) {
    if (text.size() > 45) return std::nullopt;
    const std::string copy(text);
    std::array<uint8_t, 16> bytes{};
    in_addr a4{};
    if (inet_pton(AF_INET, copy.c_str(), &a4) == 1) {
        bytes[10] = bytes[11] = 0xff;
        std::memcpy(bytes.data() + 12, &a4, 4);
        v4 = true;
        return bytes;
    }
    in6_addr a6{};
    if (inet_pton(AF_INET6, copy.c_str(), &a6) == 1) {
        std::memcpy(bytes.data(), &a6, 16);
        v4 = false;
        return bytes;
    }
    return std::nullopt;
}

bool prefix_equal(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, int prefix) {
    const int whole = prefix / 8;
    if (std::memcmp(a.data(), b.data(), static_cast<size_t>(whole)) != 0) return false;
    const int rest = prefix % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (a[static_cast<size_t>(whole)] & mask) == (b[static_cast<size_t>(whole)] & mask);
}

}  // namespace

bool AddressSet::add(std::string_view cidr) {
    const auto slash = cidr.find('/');
    bool v4 = false;
    const auto address = parse_address(cidr.substr(0, slash), v4);
    if (!address) return false;
    Network network;
    network.address = *address;
    network.prefix = 128;
    if (slash != std::string_view::npos) {
        const auto digits = cidr.substr(slash + 1);
        int prefix = -1;
        auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (error != std::errc{} || end != digits.data() + digits.size() || prefix < 0 || prefix > (v4 ? 32 : 128))
            return false;
        network.prefix = v4 ? prefix + 96 : prefix;
    }
    networks_.push_back(network);
    return true;
}

bool AddressSet::contains(std::string_view ip) const {
    bool v4 = false;
    const auto address = parse_address(ip, v4);
    if (!address) return false;
    for (const auto& network : networks_)
        if (prefix_equal(*address, network.address, network.prefix)) return true;
    return false;
}

}  // namespace smp
