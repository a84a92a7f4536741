#include "sign_command.hpp"

#include <getopt.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "config.hpp"
#include "path.hpp"
#include "secure_link.hpp"
#include "units.hpp"

namespace smp {
namespace {

constexpr const char* kUsage =
    "usage: smprotocol sign [--config PATH] [--ttl DURATION] [--ip ADDRESS] PATH\n"
    "  prints PATH?expires=...&signature=..., signed with the first secure_link secret of the\n"
    "  configuration's first http_download listener that has one\n"
    "  --ttl   how long the link is valid (default 1h): 30m, 12h, 7d\n"
    "  --ip    the client address the link is bound to (for secure_link.bind_ip: true)\n";

// RFC 3986 §2.3 and §3.3: what a path may hold as it is; the rest encoded.
std::string encode_path(const std::string& path) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (const unsigned char c : path) {
        const bool plain = std::isalnum(c) != 0 ||
                           std::string_view("-._~/!$&'()*+,;=:@").find(static_cast<char>(c)) != std::string_view::npos;
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

}  // namespace

int run_sign(int argc, char** argv) {
    static const option long_options[] = {{"config", required_argument, nullptr, 'c'},
                                          {"ttl", required_argument, nullptr, 't'},
                                          {"ip", required_argument, nullptr, 'i'},
                                          {"help", no_argument, nullptr, 'h'},
                                          {nullptr, 0, nullptr, 0}};
    std::string config_path = SMP_DEFAULT_CONFIG;
    std::string ip;
    int64_t ttl_ms = 3600 * 1000;
    optind = 1;
    int option = 0;
    while ((option = getopt_long(argc, argv, "c:t:i:h", long_options, nullptr)) != -1) {
        switch (option) {
            case 'c': config_path = optarg; break;
            case 'i': ip = optarg; break;
            case 'h': std::fputs(kUsage, stdout); return 0;
            case 't': {
                const auto ttl = parse_duration(optarg);
                if (!ttl || *ttl <= 0) {
                    std::fprintf(stderr, "smprotocol sign: --ttl: '%s' is not a duration\n%s", optarg, kUsage);
                    return 2;
                }
                ttl_ms = *ttl;
                break;
            }
            default: std::fputs(kUsage, stderr); return 2;
        }
    }
    if (optind + 1 != argc) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    const std::string asked = argv[optind];
    // Signed as the server checks it: the path decoded and normalised.
    const std::string encoded = encode_path(asked.starts_with('/') ? asked : "/" + asked);
    std::string normalized;
    if (smp::http::normalize_path(encoded, normalized) != smp::http::PathError::none) {
        std::fprintf(stderr, "smprotocol sign: '%s' is not a path the server serves\n", asked.c_str());
        return 2;
    }
    std::string secret;
    try {
        const char* environment = std::getenv("APPLICATION_ENV");
        const Config config = load_config(config_path, environment ? environment : "");
        for (const ModuleEntry& entry : config.protocols) {
            if (entry.module != "http_download") continue;
            const YAML::Node secrets = entry.node["secure_link"] ? entry.node["secure_link"]["secrets"] : YAML::Node();
            if (secrets && secrets.IsSequence() && secrets.size() > 0) {
                secret = secrets[0].as<std::string>();
                break;
            }
        }
    } catch (const std::exception& failure) {
        return print_config_failure(failure);
    }
    if (secret.empty()) {
        std::fprintf(stderr, "smprotocol sign: %s has no http_download listener with secure_link.secrets\n",
                     config_path.c_str());
        return 1;
    }
    using namespace std::chrono;
    const int64_t expires = duration_cast<seconds>(system_clock::now().time_since_epoch()).count() + ttl_ms / 1000;
    const std::string path = "/" + normalized;
    std::printf("%s?expires=%lld&signature=%s\n", encode_path(path).c_str(), static_cast<long long>(expires),
                smp::http::link_signature(secret, path, expires, ip).c_str());
    return 0;
}

}  // namespace smp
