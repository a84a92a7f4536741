#include "config.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

using smp::ConfigErrors;
using smp::parse_config;

namespace {

constexpr const char* kMinimal = R"(protocols:
  - module: http_download
    host: 127.0.0.1
    port: 8081
    root: /srv
)";

// The errors `text` produces, joined; empty when it parses.
std::string errors_of(const std::string& text, const std::string& environment = "") {
    try {
        parse_config(text, "test.yaml", environment);
    } catch (const ConfigErrors& e) {
        return e.what();
    }
    return {};
}

}  // namespace

TEST_CASE("a minimal config takes the defaults") {
    const auto config = parse_config(kMinimal, "test.yaml", "");
    CHECK(config.workers == 1);
    CHECK(config.max_connections == 1024);
    CHECK(config.shutdown_timeout_ms == 30'000);
    CHECK(config.tracking.enabled);  // into the default store
    CHECK(config.state_dir == "/var/lib/smprotocol");
    REQUIRE(config.protocols.size() == 1);
    CHECK(config.protocols[0].module == "http_download");
    CHECK(config.protocols[0].host == "127.0.0.1");
    CHECK(config.protocols[0].port == 8081);
    CHECK(config.protocols[0].line == 2);
}

TEST_CASE("units and auto are understood") {
    const auto config = parse_config(std::string("workers: auto\nshutdown_timeout: 2m\n") + kMinimal, "t", "");
    CHECK(config.workers >= 1);
    CHECK(config.shutdown_timeout_ms == 120'000);
}

TEST_CASE("an unknown key is named with its file and line") {
    CHECK(errors_of(std::string("wrokers: 2\n") + kMinimal) == "test.yaml:1: wrokers: unknown key\n");
    CHECK(errors_of(std::string("log:\n  levle: debug\n") + kMinimal) == "test.yaml:2: log.levle: unknown key\n");
}

TEST_CASE("wrong types and ranges are named") {
    CHECK(errors_of(std::string("workers: many\n") + kMinimal) == "test.yaml:1: workers: must be a whole number\n");
    CHECK(errors_of(std::string("workers: 0\n") + kMinimal) == "test.yaml:1: workers: must be between 1 and 1024\n");
    CHECK(errors_of(std::string("shutdown_timeout: soon\n") + kMinimal) ==
          "test.yaml:1: shutdown_timeout: must be a duration such as 30s, 500ms, 5m or 1h\n");
    CHECK(errors_of(std::string("log: {level: loud}\n") + kMinimal) ==
          "test.yaml:1: log.level: must be one of trace, debug, info, warn, error\n");
}

TEST_CASE("node: the name records carry; the host name when unset") {
    CHECK(parse_config(kMinimal, "t", "").node.empty());
    CHECK(parse_config(std::string("node: web-2.fra1\n") + kMinimal, "t", "").node == "web-2.fra1");
    const std::string refused =
        "test.yaml:1: node: must be 1 to 64 letters, digits, '.', '-' or '_' (the name every record and download "
        "carries)\n";
    CHECK(errors_of(std::string("node: web 2\n") + kMinimal) == refused);
    CHECK(errors_of(std::string("node: ''\n") + kMinimal) == refused);
    CHECK(errors_of("node: " + std::string(65, 'n') + "\n" + kMinimal) == refused);
}

TEST_CASE("missing required keys are named") {
    CHECK(errors_of("workers: 1\n") == "test.yaml:1: protocols: at least one protocol module is required\n");
    CHECK(errors_of("protocols:\n  - module: http_download\n    port: 80\n") ==
          "test.yaml:2: protocols[0].host: missing required key\n");
    CHECK(errors_of("protocols:\n  - host: ::1\n    port: 80\n") ==
          "test.yaml:2: protocols[0].module: missing required key\n");
    CHECK(errors_of("protocols:\n  - {module: x, host: ::1, port: 70000}\n") ==
          "test.yaml:2: protocols[0].port: must be between 1 and 65535\n");
}

TEST_CASE("trusted proxies must be addresses or networks") {
    const auto config =
        parse_config(std::string("trusted_proxies: [127.0.0.1, 10.0.0.0/8, '::1']\n") + kMinimal, "t", "");
    CHECK(config.trusted_proxies.size() == 3);
    CHECK(errors_of(std::string("trusted_proxies:\n  - 10.0.0.0/8\n  - proxy.example\n") + kMinimal) ==
          "test.yaml:3: trusted_proxies[1]: 'proxy.example' is not an IP address or network (127.0.0.1, 10.0.0.0/8, "
          "::1)\n");
}

TEST_CASE("tracking, state_dir and geoip keys") {
    const auto config = parse_config(
        std::string("tracking: {enabled: false, idle_window: 10m}\ngeoip: {city_db: /c.mmdb}\nstate_dir: st\n") +
            kMinimal,
        "t", "");
    CHECK_FALSE(config.tracking.enabled);
    CHECK(config.state_dir == "st");
    CHECK(errors_of(std::string("state_dir: ''\n") + kMinimal) == "test.yaml:1: state_dir: must not be empty\n");
    CHECK(config.tracking.idle_window_ms == 600'000);
    CHECK(config.tracking.max_open_downloads == smp::TrackingConfig{}.max_open_downloads);
    CHECK(parse_config(std::string("tracking: {max_open_downloads: 2000}\n") + kMinimal, "t", "")
              .tracking.max_open_downloads == 2000);
    CHECK(errors_of(std::string("tracking: {max_open_downloads: 0}\n") + kMinimal) ==
          "test.yaml:1: tracking.max_open_downloads: must be at least 1\n");
    CHECK(config.tracking.log_size == 256 << 20);
    CHECK(config.tracking.collectors == 1);
    const auto sized = parse_config(std::string("tracking: {log_size: 64MiB, collectors: 2}\n") + kMinimal, "t", "");
    CHECK(sized.tracking.log_size == 64 << 20);
    CHECK(sized.tracking.collectors == 2);
    CHECK(errors_of(std::string("tracking: {log_size: 4KiB}\n") + kMinimal) ==
          "test.yaml:1: tracking.log_size: must be at least 1MiB\n");
    CHECK(errors_of(std::string("tracking: {collectors: 0}\n") + kMinimal) ==
          "test.yaml:1: tracking.collectors: must be from 1 to 64\n");
    CHECK(config.tracking.checkpoint_interval_ms == 10'000);
    CHECK(parse_config(std::string("tracking: {checkpoint_interval: 2s}\n") + kMinimal, "t", "")
              .tracking.checkpoint_interval_ms == 2000);
    CHECK(errors_of(std::string("tracking: {checkpoint_interval: 500ms}\n") + kMinimal) ==
          "test.yaml:1: tracking.checkpoint_interval: must be from 1s to 10m\n");
    CHECK(errors_of(std::string("tracking: {checkpoint_interval: 1h}\n") + kMinimal) ==
          "test.yaml:1: tracking.checkpoint_interval: must be from 1s to 10m\n");
    CHECK(config.tracking.checkpoint_pause_ms == 5);
    CHECK(parse_config(std::string("tracking: {checkpoint_pause: 0ms}\n") + kMinimal, "t", "")
              .tracking.checkpoint_pause_ms == 0);
    CHECK(errors_of(std::string("tracking: {checkpoint_pause: 1s}\n") + kMinimal) ==
          "test.yaml:1: tracking.checkpoint_pause: must be from 0ms to 100ms\n");
    CHECK(config.tracking.retention_ms == 0);  // keep everything
    CHECK(parse_config(std::string("tracking: {retention: 760d}\n") + kMinimal, "t", "").tracking.retention_ms ==
          int64_t{760} * 86'400'000);
    CHECK(parse_config(std::string("tracking: {retention: 0}\n") + kMinimal, "t", "").tracking.retention_ms == 0);
    CHECK(errors_of(std::string("tracking:\n  retention: soon\n") + kMinimal) ==
          "test.yaml:2: tracking.retention: must be a duration such as 30s, 500ms, 5m or 1h\n");
    CHECK(errors_of(std::string("tracking: {retention: 10m}\n") + kMinimal) ==
          "test.yaml:1: tracking.retention: must be 0 (keep everything) or at least 1h\n");
    CHECK(config.geoip.city_db == "/c.mmdb");
    CHECK(config.geoip.asn_db.empty());
    CHECK(errors_of(std::string("geoip: {country_db: x}\n") + kMinimal) ==
          "test.yaml:1: geoip.country_db: unknown key\n");
}

TEST_CASE("the access log buffer and flush interval") {
    const auto defaults = parse_config(kMinimal, "t", "");
    CHECK(defaults.log.access_log_buffer == 64 * 1024);
    CHECK(defaults.log.access_log_flush_ms == 1000);
    const auto config = parse_config(
        std::string("log: {access_log: a.log, access_log_buffer: 256KiB, access_log_flush: 250ms}\n") + kMinimal, "t",
        "");
    CHECK(config.log.access_log_buffer == 256 * 1024);
    CHECK(config.log.access_log_flush_ms == 250);
    CHECK(parse_config(std::string("log: {access_log_buffer: 0}\n") + kMinimal, "t", "").log.access_log_buffer == 0);
    CHECK(errors_of(std::string("log: {access_log_buffer: lots}\n") + kMinimal) ==
          "test.yaml:1: log.access_log_buffer: must be a size such as 4096, 256KiB, 1MiB or 10MB\n");
    CHECK(errors_of(std::string("log: {access_log_buffer: 1GiB}\n") + kMinimal) ==
          "test.yaml:1: log.access_log_buffer: must be at most 64MiB\n");
    CHECK(errors_of(std::string("log: {access_log_flush: 0s}\n") + kMinimal) ==
          "test.yaml:1: log.access_log_flush: must be at least 1ms (access_log_buffer: 0 writes every line at once)\n");
    CHECK(errors_of(std::string("log: {access_log_flush: soon}\n") + kMinimal) ==
          "test.yaml:1: log.access_log_flush: must be a duration such as 30s, 500ms, 5m or 1h\n");
    CHECK(errors_of(std::string("log: {access_log_buffers: 4k}\n") + kMinimal) ==
          "test.yaml:1: log.access_log_buffers: unknown key\n");
}

TEST_CASE("a repeated key is an error, not a silent choice") {
    CHECK(errors_of(std::string("workers: 2\nworkers: 3\n") + kMinimal) ==
          "test.yaml:2: workers: repeated key (first at line 1)\n");
}

TEST_CASE("every error is reported, not only the first") {
    const auto text = errors_of(std::string("workers: x\nbacklog: y\n") + kMinimal);
    CHECK(text.find("test.yaml:1: workers") != std::string::npos);
    CHECK(text.find("test.yaml:2: backlog") != std::string::npos);
}

TEST_CASE("a YAML syntax error names its line") {
    CHECK(errors_of("workers: [1\nbacklog: 2\n").starts_with("test.yaml:"));
}

TEST_CASE("APPLICATION_ENV overlays its environment") {
    const std::string text = std::string(kMinimal) +
                             "log: {level: info}\n"
                             "environments:\n"
                             "  development: {log: {level: debug}, workers: 3}\n"
                             "  production: {log: {levle: warn}}\n";
    auto development = parse_config(text, "t", "development");
    CHECK(development.environment == "development");
    CHECK(development.log.level == smp::LogLevel::debug);
    CHECK(development.workers == 3);
    auto plain = parse_config(text, "t", "");
    CHECK(plain.log.level == smp::LogLevel::info);
    CHECK(plain.workers == 1);
    CHECK(errors_of(text, "production") == "test.yaml:9: log.levle: unknown key\n");
}

TEST_CASE("tracking.client_classes: a rules file replaces the rules; a bad one names its file and line") {
    // The default: the installed file, or the rules compiled in.
    const auto plain = parse_config(kMinimal, "t", "");
    REQUIRE(plain.tracking.client_class_rules != nullptr);
    if (!std::filesystem::exists(SMP_DEFAULT_CLIENT_CLASSES))
        CHECK(plain.tracking.client_class_rules->classify("curl/7.88.1") == smp::ClientClass::tool);

    const std::string path = std::filesystem::temp_directory_path() / "smp-config-test-classes.conf";
    const auto write = [&path](const char* text) { std::ofstream(path) << text; };
    write("# ours\nbot curl\n");
    const auto config = parse_config("tracking: {client_classes: " + path + "}\n" + kMinimal, "t", "");
    CHECK(config.tracking.client_classes == path);
    CHECK(config.tracking.client_class_rules->classify("curl/7.88.1") == smp::ClientClass::bot);
    CHECK(config.tracking.client_class_rules->classify("Wget/1.21.3") == smp::ClientClass::unknown);

    write("bot curl\n\nrobot wget\nbrowser\n");
    CHECK(errors_of("tracking:\n  client_classes: " + path + "\n" + kMinimal) ==
          "test.yaml:2: tracking.client_classes: " + path +
              ":3: 'robot' is not a class: browser, download_manager, tool, bot, unknown\n"
              "test.yaml:2: tracking.client_classes: " +
              path + ":4: class 'browser' without a pattern (CLASS PATTERN)\n");
    std::remove(path.c_str());
    CHECK(errors_of("tracking: {client_classes: " + path + "}\n" + kMinimal) ==
          "test.yaml:1: tracking.client_classes: cannot read " + path + ": No such file or directory\n");
    CHECK(errors_of(std::string("tracking: {client_classes: ''}\n") + kMinimal) ==
          "test.yaml:1: tracking.client_classes: must name a rules file, e.g. " SMP_DEFAULT_CLIENT_CLASSES "\n");
}
