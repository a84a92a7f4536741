// A set of IP networks ("127.0.0.0/8", "::1", "2001:db8::/32"): which peers
// are trusted proxies, who may see a dashboard. One copy, used by the core
// and the protocol modules.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace smp {

class AddressSet {
   public:
    // Adds a network or a single address; false when `cidr` is not one.
    bool add(std::string_view cidr);
    // True when `ip` (textual IPv4 or IPv6, IPv4-mapped IPv6 included) is in a network of the set.
    bool contains(std::string_view ip) const;
    bool empty() const { return networks_.empty(); }

   private:
    struct Network {
        std::array<uint8_t, 16> address{};  // IPv4 as IPv4-mapped IPv6
        int prefix = 128;
    };
    std::vector<Network> networks_;
};

}  // namespace smp
