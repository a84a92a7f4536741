#include "anonymize.hpp"

#include <doctest/doctest.h>

#include <string>

#include "geoip.hpp"

using smp::AddressShortener;

namespace {
std::string shortened(const AddressShortener& shortener, const char* address) {
    AddressShortener::Text text{};
    return shortener.shorten(address, text);
}
}  // namespace

TEST_CASE("an address loses its low bits: 16 of IPv4, 80 of IPv6, as configured") {
    const AddressShortener cnil(16, 80);
    CHECK(shortened(cnil, "203.0.113.77") == "203.0.0.0");
    CHECK(shortened(cnil, "2001:db8:abcd:12:3456:789a:bcde:f012") == "2001:db8:abcd::");
    CHECK(shortened(cnil, "::1") == "::");
    CHECK(shortened(cnil, "::ffff:198.51.100.9") == "::ffff:198.51.0.0");  // IPv4 rules for a mapped address
}

TEST_CASE("bits that do not fall on a byte, none, and all") {
    CHECK(shortened(AddressShortener(12, 0), "203.0.113.77") == "203.0.112.0");
    CHECK(shortened(AddressShortener(0, 0), "203.0.113.77") == "203.0.113.77");
    CHECK(shortened(AddressShortener(32, 128), "203.0.113.77") == "0.0.0.0");
    CHECK(shortened(AddressShortener(32, 128), "2001:db8::1") == "::");
    CHECK(shortened(AddressShortener(8, 52), "2001:db8:abcd:12:3456:789a:bcde:f012") == "2001:db8:abcd:12:3450::");
}

TEST_CASE("what is not an address names no one and stays as it is") {
    const AddressShortener cnil(16, 80);
    CHECK(shortened(cnil, "unknown") == "unknown");
    CHECK(shortened(cnil, "_hidden") == "_hidden");
    CHECK(shortened(cnil, "") == "");
    AddressShortener::Text text{};
    CHECK(cnil.shorten(nullptr, text) == nullptr);
}

TEST_CASE("a place travels as one text and comes back whole") {
    const smp::GeoInfo paris{.country = "FR",
                             .city = "Paris",
                             .latitude = 48.8566,
                             .longitude = 2.3522,
                             .has_location = true,
                             .asn = 64500,
                             .organisation = "Example Transit"};
    const auto back = smp::decode_geo(smp::encode_geo(paris));
    REQUIRE(back);
    CHECK(back->country == "FR");
    CHECK(back->city == "Paris");
    CHECK(back->organisation == "Example Transit");
    CHECK(back->asn == 64500);
    CHECK(back->has_location);
    CHECK(back->latitude == doctest::Approx(48.8566));
    CHECK(back->longitude == doctest::Approx(2.3522));

    const auto nowhere = smp::decode_geo(smp::encode_geo(smp::GeoInfo{}));
    REQUIRE(nowhere);
    CHECK(nowhere->country.empty());
    CHECK_FALSE(nowhere->has_location);
    CHECK_FALSE(smp::decode_geo(""));
    CHECK_FALSE(smp::decode_geo("FR\x1fParis"));
    CHECK_FALSE(smp::decode_geo("FR\x1fParis\x1f\x1fAS1"));
}
