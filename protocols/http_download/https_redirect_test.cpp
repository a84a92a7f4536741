#include "https_redirect.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace smp::http;

namespace {

std::string location(std::string_view host, std::string_view target, uint16_t port = 443,
                     std::string_view local_ip = "192.0.2.1") {
    std::string out = "Location: ";
    append_https_location(out, host, local_ip, port, target);
    return out.substr(10);
}

}  // namespace

TEST_CASE("the Host's name is kept and its port replaced") {
    CHECK(location("example.org", "/a") == "https://example.org/a");
    CHECK(location("example.org:8080", "/a", 8443) == "https://example.org:8443/a");
    CHECK(location("example.org:80", "/a") == "https://example.org/a");  // 443 is left out
    CHECK(location(" example.org ", "/a") == "https://example.org/a");
    CHECK(location("127.0.0.1:8080", "/", 8443) == "https://127.0.0.1:8443/");
}

TEST_CASE("an IPv6 literal keeps its brackets") {
    CHECK(location("[::1]:8080", "/f", 8443) == "https://[::1]:8443/f");
    CHECK(location("[2001:db8::1]", "/f") == "https://[2001:db8::1]/f");
}

TEST_CASE("no Host: the address the client reached") {
    CHECK(location("", "/f") == "https://192.0.2.1/f");
    CHECK(location("", "/f", 8443, "2001:db8::2") == "https://[2001:db8::2]:8443/f");
}

TEST_CASE("the target as received: percent-encoding and query kept") {
    CHECK(location("h", "/small.bin?x=1&y=a%20b") == "https://h/small.bin?x=1&y=a%20b");
    CHECK(location("h", "/%2e%2e/etc/passwd") == "https://h/%2e%2e/etc/passwd");
    CHECK(location("h", "/a/b?c", 8443) == "https://h:8443/a/b?c");
}

TEST_CASE("an absolute-form target: its authority's host, its path and query") {
    CHECK(location("ignored", "http://example.org:8080/a?b=c") == "https://example.org/a?b=c");
    CHECK(location("ignored", "http://user@[::1]:80/a", 8443) == "https://[::1]:8443/a");
    CHECK(location("ignored", "http://example.org") == "https://example.org/");
    CHECK(location("ignored", "HTTP://example.org?q") == "https://example.org/?q");
    CHECK(location("", "http:///a") == "https://192.0.2.1/a");
}

TEST_CASE("a target with no path: the root") {
    CHECK(location("h", "*") == "https://h/");
    CHECK(location("h", "example.org:443") == "https://h/");
}
