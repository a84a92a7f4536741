#include "tls.hpp"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

using smp::tls::HandshakeFailure;
using smp::tls::HandshakeFailures;

namespace {

std::vector<std::pair<smp_log_level, std::string>> lines;

void remember_line(smp_log_level level, const char*, const char* message) { lines.emplace_back(level, message); }

smp_core_api logging_core() {
    smp_core_api core{};
    core.size = sizeof core;
    core.log = remember_line;
    return core;
}

}  // namespace

TEST_CASE("failed handshakes: the first at once, then a count by cause once a minute, until a quiet minute") {
    lines.clear();
    const smp_core_api core = logging_core();
    HandshakeFailures failures;
    failures.note(HandshakeFailure::none, "10.0.0.1", "", &core, "m", 0);
    CHECK(lines.empty());  // closed before a byte: a TCP check, not a failure

    failures.note(HandshakeFailure::not_tls, "10.0.0.1", "http request", &core, "m", 1'000);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].first == SMP_LOG_INFO);
    CHECK(lines[0].second ==
          "TLS handshake failed from 10.0.0.1: not TLS (http request); more are counted once a minute");

    failures.note(HandshakeFailure::timeout, "10.0.0.2", "", &core, "m", 2'000);
    failures.note(HandshakeFailure::timeout, "10.0.0.3", "", &core, "m", 3'000);
    failures.note(HandshakeFailure::not_tls, "10.0.0.4", "", &core, "m", 4'000);
    REQUIRE(lines.size() == 4);
    CHECK(lines[1].first == SMP_LOG_DEBUG);
    CHECK(lines[1].second == "TLS handshake failed from 10.0.0.2: timed out");

    failures.tick(&core, "m", 60'000);  // not a minute since the first line yet
    CHECK(lines.size() == 4);
    failures.tick(&core, "m", 61'000);
    REQUIRE(lines.size() == 5);
    CHECK(lines[4].first == SMP_LOG_INFO);
    CHECK(lines[4].second == "TLS handshakes failed in the last minute: 3 (timed out 2, not TLS 1)");

    failures.tick(&core, "m", 121'000);  // a quiet minute ends the episode
    CHECK(lines.size() == 5);
    failures.note(HandshakeFailure::client_left, "10.0.0.5", "", &core, "m", 130'000);
    REQUIRE(lines.size() == 6);
    CHECK(lines[5].first == SMP_LOG_INFO);  // a new episode starts at info
}
