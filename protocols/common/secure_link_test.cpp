#include "secure_link.hpp"

#include <doctest/doctest.h>

using namespace smp::http;

TEST_CASE("secure_link: a signature is HMAC-SHA256 in base64url without padding") {
    // printf '/a.bin\n1700000000' | openssl dgst -sha256 -hmac s3cret -binary | basenc --base64url | tr -d =
    CHECK(link_signature("s3cret", "/a.bin", 1700000000, "") == "g-h5rDaUILTUEspbh1TU2FkTBG3uzHiii_-NATRXzrI");
    CHECK(link_signature("s3cret", "/a.bin", 1700000000, "").find_first_of("+/=") == std::string::npos);
    CHECK(link_signature("s3cret", "/a.bin", 1700000000, "192.0.2.1") !=
          link_signature("s3cret", "/a.bin", 1700000000, ""));
}

TEST_CASE("secure_link: valid, tampered, expired, unsigned, and every secret verifies") {
    const std::vector<std::string> secrets{"new-secret", "old-secret"};
    const int64_t now = 1'800'000'000;
    const auto query = [](const std::string& secret, const char* path, int64_t expires, const char* ip = "") {
        return "expires=" + std::to_string(expires) + "&signature=" + link_signature(secret, path, expires, ip);
    };
    CHECK(check_link(secrets, "/a.bin", query("new-secret", "/a.bin", now + 60), "", now) == LinkCheck::valid);
    CHECK(check_link(secrets, "/a.bin", query("old-secret", "/a.bin", now + 60), "", now) == LinkCheck::valid);
    CHECK(check_link(secrets, "/a.bin", query("gone-secret", "/a.bin", now + 60), "", now) == LinkCheck::bad_signature);
    CHECK(check_link(secrets, "/b.bin", query("new-secret", "/a.bin", now + 60), "", now) ==
          LinkCheck::bad_signature);  // another path
    std::string later = query("new-secret", "/a.bin", now + 60);
    later.replace(later.find(std::to_string(now + 60)), 10, std::to_string(now + 99999).substr(0, 10));
    CHECK(check_link(secrets, "/a.bin", later, "", now) == LinkCheck::bad_signature);  // a longer time
    CHECK(check_link(secrets, "/a.bin", query("new-secret", "/a.bin", now - 1), "", now) == LinkCheck::expired);
    // A forged link is refused as such, not as expired.
    CHECK(check_link(secrets, "/a.bin", query("gone-secret", "/a.bin", now - 1), "", now) == LinkCheck::bad_signature);
    CHECK(check_link(secrets, "/a.bin", "", "", now) == LinkCheck::unsigned_link);
    CHECK(check_link(secrets, "/a.bin", "expires=12x&signature=abc", "", now) == LinkCheck::unsigned_link);
    CHECK(check_link(secrets, "/a.bin", "signature=abc", "", now) == LinkCheck::unsigned_link);
    // Bound to an address: only that one.
    const std::string bound = query("new-secret", "/a.bin", now + 60, "192.0.2.7");
    CHECK(check_link(secrets, "/a.bin", bound, "192.0.2.7", now) == LinkCheck::valid);
    CHECK(check_link(secrets, "/a.bin", bound, "192.0.2.8", now) == LinkCheck::bad_signature);
    // Other parameters in any order are ignored.
    CHECK(check_link(secrets, "/a.bin", "x=1&" + query("new-secret", "/a.bin", now + 60) + "&y", "", now) ==
          LinkCheck::valid);
}

TEST_CASE("secure_link: same_secret is equality, lengths included") {
    using smp::http::same_secret;
    CHECK(same_secret("token-0123456789", "token-0123456789"));
    CHECK_FALSE(same_secret("token-0123456789", "token-0123456788"));
    CHECK_FALSE(same_secret("token-0123456789", "token-012345678"));  // a prefix
    CHECK_FALSE(same_secret("", "x"));
    CHECK(same_secret("", ""));
}
