// The client behind trusted proxies, from Forwarded (RFC 7239) or
// X-Forwarded-For: read from the right, the nearest address that is not a
// trusted proxy. Only asked when the peer itself is a trusted proxy.
#pragma once

#include <array>
#include <functional>
#include <string_view>

namespace smp::http {

using ClientAddress = std::array<char, 46>;  // INET6_ADDRSTRLEN, NUL-terminated

// Forwarded wins when both are present. False when the fields name no
// usable address (absent, "unknown", an obfuscated name, garbage).
bool forwarded_client(std::string_view forwarded, std::string_view x_forwarded_for,
                      const std::function<bool(const char*)>& trusted, ClientAddress& client);

}  // namespace smp::http
