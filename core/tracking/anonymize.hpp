// privacy.anonymize_ip: a client's address with its low bits zeroed, as
// Matomo and GoAccess do (docs/privacy.md), before a record leaves the worker.
#pragma once

#include <array>
#include <string_view>

namespace smp {

class AddressShortener {
   public:
    // Bits zeroed at the end of an IPv4 (0..32) and an IPv6 (0..128)
    // address. An IPv4-mapped IPv6 address (::ffff:192.0.2.1) counts as IPv4.
    AddressShortener(int ipv4_bits, int ipv6_bits) : ipv4_bits_(ipv4_bits), ipv6_bits_(ipv6_bits) {}

    // Room for the text of any IPv6 address, NUL included.
    using Text = std::array<char, 46>;
    // `address` shortened, written to `out`; a text that is not an IP
    // address (a Forwarded header's "unknown" or "_hidden") comes back as it
    // is: it names no one.
    const char* shorten(const char* address, Text& out) const;

   private:
    int ipv4_bits_;
    int ipv6_bits_;
};

}  // namespace smp
