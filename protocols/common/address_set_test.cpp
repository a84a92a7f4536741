#include "address_set.hpp"

#include <doctest/doctest.h>

using smp::AddressSet;

TEST_CASE("networks and single addresses, IPv4 and IPv6") {
    AddressSet set;
    REQUIRE(set.add("127.0.0.0/8"));
    REQUIRE(set.add("10.1.2.3"));
    REQUIRE(set.add("2001:db8::/32"));
    REQUIRE(set.add("::1"));
    CHECK(set.contains("127.0.0.1"));
    CHECK(set.contains("127.255.255.254"));
    CHECK_FALSE(set.contains("128.0.0.1"));
    CHECK(set.contains("10.1.2.3"));
    CHECK_FALSE(set.contains("10.1.2.4"));
    CHECK(set.contains("2001:db8:ffff::1"));
    CHECK_FALSE(set.contains("2001:db9::1"));
    CHECK(set.contains("::1"));
    CHECK(set.contains("::ffff:127.0.0.1"));  // IPv4-mapped, as dual-stack sockets report it
}

TEST_CASE("prefixes that end inside a byte") {
    AddressSet set;
    REQUIRE(set.add("192.168.4.0/22"));
    CHECK(set.contains("192.168.7.255"));
    CHECK_FALSE(set.contains("192.168.8.0"));
    CHECK_FALSE(set.contains("192.168.3.255"));
}

TEST_CASE("garbage is refused and matches nothing") {
    AddressSet set;
    CHECK_FALSE(set.add("localhost"));
    CHECK_FALSE(set.add("10.0.0.0/33"));
    CHECK_FALSE(set.add("10.0.0.0/"));
    CHECK_FALSE(set.add("10.0.0.0/8x"));
    CHECK_FALSE(set.add("::/129"));
    CHECK(set.empty());
    REQUIRE(set.add("0.0.0.0/0"));
    CHECK(set.contains("8.8.8.8"));
    CHECK_FALSE(set.contains("unknown"));
    CHECK_FALSE(set.contains(""));
}
