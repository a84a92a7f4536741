#include "anonymize.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>

namespace smp {
namespace {

// Zeroes the last `bits` bits of the `size` bytes at `bytes`.
void zero_low_bits(uint8_t* bytes, size_t size, int bits) {
    for (size_t i = size; i > 0 && bits > 0; --i, bits -= 8)
        bytes[i - 1] = bits >= 8 ? 0 : static_cast<uint8_t>(bytes[i - 1] & (0xff << bits));
}

}  // namespace

const char* AddressShortener::shorten(const char* address, Text& out) const {
    if (address == nullptr) return nullptr;
    in_addr v4{};
    in6_addr v6{};
    if (inet_pton(AF_INET, address, &v4) == 1) {
        zero_low_bits(reinterpret_cast<uint8_t*>(&v4), sizeof v4, ipv4_bits_);
        return inet_ntop(AF_INET, &v4, out.data(), out.size());
    }
    if (inet_pton(AF_INET6, address, &v6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&v6))
            zero_low_bits(v6.s6_addr + 12, 4, ipv4_bits_);
        else
            zero_low_bits(v6.s6_addr, sizeof v6.s6_addr, ipv6_bits_);
        return inet_ntop(AF_INET6, &v6, out.data(), out.size());
    }
    return address;
}

}  // namespace smp
