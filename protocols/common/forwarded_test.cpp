#include "forwarded.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace smp::http;

namespace {

// Trusted: the loopback proxies and 10.0.0.0/8, as a test stand-in for the config's list.
bool trusted(const char* ip) {
    const std::string text(ip);
    return text.starts_with("127.") || text.starts_with("10.") || text == "::1";
}

std::string client_of(std::string_view forwarded, std::string_view xff) {
    ClientAddress client{};
    return forwarded_client(forwarded, xff, trusted, client) ? std::string(client.data()) : "-";
}

}  // namespace

TEST_CASE("X-Forwarded-For is read from the right, skipping trusted proxies") {
    CHECK(client_of("", "203.0.113.9") == "203.0.113.9");
    CHECK(client_of("", "203.0.113.9, 10.0.0.2") == "203.0.113.9");
    CHECK(client_of("", "198.51.100.1, 203.0.113.9, 10.0.0.2") == "203.0.113.9");  // the left one may be forged
    CHECK(client_of("", "10.0.0.3, 10.0.0.2") == "10.0.0.3");
    CHECK(client_of("", " 2001:db8::7 ") == "2001:db8::7");
}

TEST_CASE("Forwarded wins, with quotes, brackets and ports") {
    CHECK(client_of("for=203.0.113.9", "198.51.100.1") == "203.0.113.9");
    CHECK(client_of("for=\"[2001:db8:cafe::17]:4711\";proto=https", "") == "2001:db8:cafe::17");
    CHECK(client_of("for=\"203.0.113.9:1234\", For=10.0.0.2;by=10.0.0.1", "") == "203.0.113.9");
    CHECK(client_of("proto=http;for=192.0.2.60;by=203.0.113.43", "") == "192.0.2.60");
}

TEST_CASE("nothing usable means no forwarded client") {
    CHECK(client_of("", "") == "-");
    CHECK(client_of("", "unknown") == "-");
    CHECK(client_of("for=unknown", "") == "-");
    CHECK(client_of("for=_hidden, for=10.0.0.2", "") == "10.0.0.2");  // the proxy itself, as nothing lies beyond
    CHECK(client_of("", "not an address") == "-");
    CHECK(client_of("", std::string(200, '1')) == "-");
}
