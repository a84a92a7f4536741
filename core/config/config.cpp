#include "config.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "address_set.hpp"
#include "units.hpp"

namespace smp {
namespace {

// Linux writes at most about 2 GiB in one write(2), and the buffer must go
// out in one so that no line is cut; far below that, a bigger buffer only
// holds more lines back from the file.
constexpr int64_t kMaxAccessLogBuffer = 64 * 1024 * 1024;

// A node's name goes into every record, download and log line of a cluster
// (docs/scale.md): short, and nothing that needs quoting anywhere.
bool is_node_name(std::string_view name) {
    return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_';
    });
}

std::string join_errors(const std::vector<std::string>& errors) {
    std::string text;
    for (const auto& error : errors) text += error + "\n";
    return text;
}

// Keys of a map that are not in `known` are errors, each named.
template <size_t N>
void check_keys(const YAML::Node& map, const std::string& prefix, const std::array<std::string_view, N>& known,
                ErrorList& errors) {
    check_repeated_keys(map, prefix, errors);
    for (const auto& item : map) {
        const auto name = item.first.Scalar();
        // A key merged in from an environment overlay has no mark of its own; its value has.
        const YAML::Node& at = item.first.Mark().is_null() ? item.second : item.first;
        if (std::find(known.begin(), known.end(), name) == known.end())
            errors.add(at, prefix.empty() ? name : prefix + "." + name, "unknown key");
    }
}

// Applies an environment's overlay on `base`: maps merge key by key,
// everything else replaces. Nodes keep their marks, so errors found later
// point at the overlay's lines.
void merge_overlay(YAML::Node base, const YAML::Node& overlay) {
    for (const auto& item : overlay) {
        const auto name = item.first.Scalar();
        YAML::Node target = base[name];
        if (target.IsMap() && item.second.IsMap())
            merge_overlay(target, item.second);
        else
            base[name] = item.second;
    }
}

std::vector<ModuleEntry> read_modules(const YAML::Node& list, const std::string& key, bool is_protocol,
                                      ErrorList& errors) {
    std::vector<ModuleEntry> entries;
    if (!list || list.IsNull()) return entries;
    if (!list.IsSequence()) {
        errors.add(list, key, "must be a list of modules");
        return entries;
    }
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node item = list[i];
        ModuleEntry entry;
        entry.key = key + "[" + std::to_string(i) + "]";
        entry.line = line_of(item);
        entry.node = item;
        if (!item.IsMap()) {
            errors.add(item, entry.key, "must be a map with a 'module' key");
            continue;
        }
        if (!item["module"]) {
            errors.add(item, entry.key + ".module", "missing required key");
            continue;
        }
        if (auto name = read_string(item["module"], entry.key + ".module", errors)) entry.module = *name;
        if (is_protocol) {
            if (!item["host"])
                errors.add(item, entry.key + ".host", "missing required key");
            else if (auto host = read_string(item["host"], entry.key + ".host", errors))
                entry.host = *host;
            if (!item["port"]) {
                errors.add(item, entry.key + ".port", "missing required key");
            } else if (auto port = read_int(item["port"], entry.key + ".port", errors)) {
                if (*port < 1 || *port > 65535)
                    errors.add(item["port"], entry.key + ".port", "must be between 1 and 65535");
                else
                    entry.port = static_cast<uint16_t>(*port);
            }
        }
        entries.push_back(std::move(entry));
    }
    return entries;
}

void read_log(const YAML::Node& node, LogConfig& log, ErrorList& errors) {
    if (!node) return;
    if (!node.IsMap()) {
        errors.add(node, "log", "must be a map");
        return;
    }
    check_keys(node, "log",
               std::array<std::string_view, 5>{"level", "file", "access_log", "access_log_buffer", "access_log_flush"},
               errors);
    if (node["level"]) {
        if (auto text = read_string(node["level"], "log.level", errors)) {
            if (auto level = parse_log_level(*text))
                log.level = *level;
            else
                errors.add(node["level"], "log.level", "must be one of trace, debug, info, warn, error");
        }
    }
    if (node["file"])
        if (auto file = read_string(node["file"], "log.file", errors)) log.file = *file;
    if (node["access_log"])
        if (auto file = read_string(node["access_log"], "log.access_log", errors)) log.access_log = *file;
    if (node["access_log_buffer"])
        if (auto value = read_size(node["access_log_buffer"], "log.access_log_buffer", errors)) {
            if (*value > kMaxAccessLogBuffer)
                errors.add(node["access_log_buffer"], "log.access_log_buffer", "must be at most 64MiB");
            else
                log.access_log_buffer = *value;
        }
    if (node["access_log_flush"])
        if (auto value = read_duration(node["access_log_flush"], "log.access_log_flush", errors)) {
            if (*value < 1)
                errors.add(node["access_log_flush"], "log.access_log_flush",
                           "must be at least 1ms (access_log_buffer: 0 writes every line at once)");
            else
                log.access_log_flush_ms = *value;
        }
}

// tracking.client_classes: the rules file named, else the installed one,
// else (that one absent) the rules compiled in. A file named, or installed,
// that cannot be read or has a bad line is an error naming the file and line.
void read_client_classes(const YAML::Node& node, TrackingConfig& tracking, ErrorList& errors) {
    constexpr std::string_view key = "tracking.client_classes";
    const bool named = node.IsDefined();
    const int line = named ? line_of(node) : 0;
    std::string path = SMP_DEFAULT_CLIENT_CLASSES;
    if (named) {
        const auto value = read_string(node, key, errors);
        if (!value) return;
        if (value->empty()) return errors.add_line(line, key, "must name a rules file, e.g. " + path);
        path = *value;
    }
    std::ifstream in(path);
    if (!in) {
        if (!named && errno == ENOENT) return;  // the compiled-in rules
        return errors.add_line(line, key, "cannot read " + path + ": " + std::strerror(errno));
    }
    std::stringstream text;
    text << in.rdbuf();
    std::vector<RuleError> bad;
    auto rules = std::make_shared<const ClientClassRules>(ClientClassRules::parse(text.str(), bad));
    for (const RuleError& error : bad)
        errors.add_line(line, key, path + ":" + std::to_string(error.line) + ": " + error.message);
    tracking.client_classes = path;
    tracking.client_class_rules = std::move(rules);
}

void read_tracking(const YAML::Node& node, TrackingConfig& tracking, ErrorList& errors) {
    if (!node) return read_client_classes(node, tracking, errors);
    if (!node.IsMap()) {
        errors.add(node, "tracking", "must be a map");
        return;
    }
    check_keys(
        node, "tracking",
        std::array<std::string_view, 9>{"enabled", "idle_window", "max_open_downloads", "log_size", "collectors",
                                        "retention", "client_classes", "checkpoint_interval", "checkpoint_pause"},
        errors);
    if (node["enabled"])
        if (auto value = read_bool(node["enabled"], "tracking.enabled", errors)) tracking.enabled = *value;
    if (node["idle_window"])
        if (auto value = read_duration(node["idle_window"], "tracking.idle_window", errors)) {
            if (*value < 1000)
                errors.add(node["idle_window"], "tracking.idle_window", "must be at least 1s");
            else
                tracking.idle_window_ms = *value;
        }
    if (node["max_open_downloads"])
        if (auto value = read_int(node["max_open_downloads"], "tracking.max_open_downloads", errors)) {
            if (*value < 1)
                errors.add(node["max_open_downloads"], "tracking.max_open_downloads", "must be at least 1");
            else
                tracking.max_open_downloads = *value;
        }
    if (node["log_size"])
        if (auto value = read_size(node["log_size"], "tracking.log_size", errors)) {
            if (*value < 1 << 20)
                errors.add(node["log_size"], "tracking.log_size", "must be at least 1MiB");
            else
                tracking.log_size = *value;
        }
    if (node["checkpoint_interval"])
        if (auto value = read_duration(node["checkpoint_interval"], "tracking.checkpoint_interval", errors)) {
            if (*value < 1000 || *value > 600 * 1000)
                errors.add(node["checkpoint_interval"], "tracking.checkpoint_interval", "must be from 1s to 10m");
            else
                tracking.checkpoint_interval_ms = *value;
        }
    if (node["checkpoint_pause"])
        if (auto value = read_duration(node["checkpoint_pause"], "tracking.checkpoint_pause", errors)) {
            if (*value < 0 || *value > 100)
                errors.add(node["checkpoint_pause"], "tracking.checkpoint_pause", "must be from 0ms to 100ms");
            else
                tracking.checkpoint_pause_ms = *value;
        }
    if (node["collectors"])
        if (auto value = read_int(node["collectors"], "tracking.collectors", errors)) {
            if (*value < 1 || *value > 64)
                errors.add(node["collectors"], "tracking.collectors", "must be from 1 to 64");
            else
                tracking.collectors = static_cast<int>(*value);
        }
    if (node["retention"])
        if (auto value = read_duration(node["retention"], "tracking.retention", errors)) {
            if (*value > 0 && *value < 3600 * 1000)
                errors.add(node["retention"], "tracking.retention", "must be 0 (keep everything) or at least 1h");
            else
                tracking.retention_ms = *value;
        }
    read_client_classes(node["client_classes"], tracking, errors);
}

void read_geoip(const YAML::Node& node, GeoIpConfig& geoip, ErrorList& errors) {
    if (!node) return;
    if (!node.IsMap()) {
        errors.add(node, "geoip", "must be a map");
        return;
    }
    check_keys(node, "geoip", std::array<std::string_view, 2>{"city_db", "asn_db"}, errors);
    if (node["city_db"])
        if (auto value = read_string(node["city_db"], "geoip.city_db", errors)) geoip.city_db = *value;
    if (node["asn_db"])
        if (auto value = read_string(node["asn_db"], "geoip.asn_db", errors)) geoip.asn_db = *value;
}

void read_privacy(const YAML::Node& node, PrivacyConfig& privacy, ErrorList& errors) {
    if (!node) return;
    if (!node.IsMap()) {
        errors.add(node, "privacy", "must be a map");
        return;
    }
    check_keys(node, "privacy", std::array<std::string_view, 2>{"anonymize_ip", "access_log"}, errors);
    if (const auto bits = node["anonymize_ip"]) {
        if (!bits.IsMap()) {
            errors.add(bits, "privacy.anonymize_ip", "must be a map: {ipv4: 16, ipv6: 80}");
        } else {
            check_keys(bits, "privacy.anonymize_ip", std::array<std::string_view, 2>{"ipv4", "ipv6"}, errors);
            const auto read_bits = [&](const char* name, int most, int& out) {
                const std::string key = std::string("privacy.anonymize_ip.") + name;
                if (const auto value_node = bits[name])
                    if (auto value = read_int(value_node, key, errors)) {
                        if (*value < 0 || *value > most)
                            errors.add(value_node, key, "must be from 0 to " + std::to_string(most) + " (bits zeroed)");
                        else
                            out = static_cast<int>(*value);
                    }
            };
            read_bits("ipv4", 32, privacy.anonymize_ipv4_bits);
            read_bits("ipv6", 128, privacy.anonymize_ipv6_bits);
        }
    }
    if (node["access_log"])
        if (auto value = read_bool(node["access_log"], "privacy.access_log", errors)) privacy.access_log = *value;
}

void read_trusted_proxies(const YAML::Node& node, std::vector<std::string>& proxies, ErrorList& errors) {
    if (!node) return;
    auto list = read_string_list(node, "trusted_proxies", errors);
    if (!list) return;
    for (size_t i = 0; i < list->size(); ++i) {
        AddressSet check;
        if (!check.add((*list)[i]))
            errors.add(node[i], "trusted_proxies[" + std::to_string(i) + "]",
                       "'" + (*list)[i] + "' is not an IP address or network (127.0.0.1, 10.0.0.0/8, ::1)");
    }
    proxies = *list;
}

template <typename T>
void read_positive(const YAML::Node& node, std::string_view key, T& out, ErrorList& errors, int64_t max) {
    if (!node) return;
    if (auto value = read_int(node, key, errors)) {
        if (*value < 1 || *value > max)
            errors.add(node, key, "must be between 1 and " + std::to_string(max));
        else
            out = static_cast<T>(*value);
    }
}

}  // namespace

ConfigErrors::ConfigErrors(std::vector<std::string> errors)
    : std::runtime_error(join_errors(errors)), errors_(std::move(errors)) {}

void check_repeated_keys(const YAML::Node& map, const std::string& prefix, ErrorList& errors) {
    // YAML forbids repeated keys, but yaml-cpp silently keeps one of them.
    std::vector<std::pair<std::string, int>> seen;
    for (const auto& item : map) {
        const auto name = item.first.Scalar();
        const auto first = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return s.first == name; });
        if (first != seen.end())
            errors.add(item.first, prefix.empty() ? name : prefix + "." + name,
                       "repeated key (first at line " + std::to_string(first->second) + ")");
        seen.emplace_back(name, line_of(item.first));
    }
}

int line_of(const YAML::Node& node) {
    const auto mark = node.Mark();
    return mark.is_null() ? 0 : mark.line + 1;
}

void ErrorList::add(const YAML::Node& at, std::string_view key, std::string_view message) {
    add_line(line_of(at), key, message);
}

void ErrorList::add_line(int line, std::string_view key, std::string_view message) {
    std::string text = file_;
    if (line > 0) text += ":" + std::to_string(line);
    text += ": ";
    text += key;
    text += ": ";
    text += message;
    errors_.push_back(std::move(text));
}

std::optional<LogLevel> parse_log_level(std::string_view text) {
    if (text == "trace") return LogLevel::trace;
    if (text == "debug") return LogLevel::debug;
    if (text == "info") return LogLevel::info;
    if (text == "warn") return LogLevel::warn;
    if (text == "error") return LogLevel::error;
    return std::nullopt;
}

std::optional<std::string> read_string(const YAML::Node& node, std::string_view key, ErrorList& errors) {
    if (!node.IsScalar()) {
        errors.add(node, key, "must be a string");
        return std::nullopt;
    }
    return node.Scalar();
}

std::optional<int64_t> read_int(const YAML::Node& node, std::string_view key, ErrorList& errors) {
    int64_t value = 0;
    if (!node.IsScalar() || !YAML::convert<int64_t>::decode(node, value)) {
        errors.add(node, key, "must be a whole number");
        return std::nullopt;
    }
    return value;
}

std::optional<int64_t> read_size(const YAML::Node& node, std::string_view key, ErrorList& errors) {
    std::optional<int64_t> value;
    if (node.IsScalar()) value = parse_size(node.Scalar());
    if (!value) errors.add(node, key, "must be a size such as 4096, 256KiB, 1MiB or 10MB");
    return value;
}

std::optional<int64_t> read_duration(const YAML::Node& node, std::string_view key, ErrorList& errors) {
    std::optional<int64_t> value;
    if (node.IsScalar()) value = parse_duration(node.Scalar());
    if (!value) errors.add(node, key, "must be a duration such as 30s, 500ms, 5m or 1h");
    return value;
}

std::optional<bool> read_bool(const YAML::Node& node, std::string_view key, ErrorList& errors) {
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
        errors.add(node, key, "must be true or false");
        return std::nullopt;
    }
    return value;
}

std::optional<std::vector<std::string>> read_string_list(const YAML::Node& node, std::string_view key,
                                                         ErrorList& errors) {
    if (!node.IsSequence()) {
        errors.add(node, key, "must be a list of strings");
        return std::nullopt;
    }
    std::vector<std::string> values;
    for (const auto& item : node) {
        if (!item.IsScalar()) {
            errors.add(item, key, "must be a list of strings");
            return std::nullopt;
        }
        values.push_back(item.Scalar());
    }
    return values;
}

Config parse_config(const std::string& text, const std::string& name, const std::string& environment) {
    ErrorList errors(name);
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
        errors.add_line(e.mark.line + 1, "yaml", e.msg);
        throw ConfigErrors(errors.take());
    }
    if (!root.IsMap()) {
        errors.add(root, "config", "the file must hold a map of settings");
        throw ConfigErrors(errors.take());
    }

    Config config;
    config.path = name;
    const YAML::Node environments = root["environments"];
    if (environments && !environments.IsMap()) errors.add(environments, "environments", "must be a map");
    if (!environment.empty() && environments && environments.IsMap() && environments[environment]) {
        const YAML::Node overlay = environments[environment];
        if (!overlay.IsMap()) {
            errors.add(overlay, "environments." + environment, "must be a map");
        } else {
            merge_overlay(root, overlay);
            config.environment = environment;
        }
    }

    check_keys(
        root, "",
        std::array<std::string_view, 17>{"node", "workers", "max_connections", "backlog", "shutdown_timeout",
                                         "module_dir", "state_dir", "user", "reuseport", "log", "tracking", "geoip",
                                         "privacy", "trusted_proxies", "protocols", "plugins", "environments"},
        errors);

    if (const auto node = root["node"])
        if (auto value = read_string(node, "node", errors)) {
            if (!is_node_name(*value))
                errors.add(node, "node",
                           "must be 1 to 64 letters, digits, '.', '-' or '_' (the name every record and download "
                           "carries)");
            else
                config.node = *value;
        }
    if (const auto node = root["workers"]) {
        if (node.IsScalar() && node.Scalar() == "auto") {
            config.workers = std::max(1, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
        } else {
            read_positive(node, "workers", config.workers, errors, 1024);
        }
    }
    read_positive(root["max_connections"], "max_connections", config.max_connections, errors, 10'000'000);
    read_positive(root["backlog"], "backlog", config.backlog, errors, 1 << 20);
    if (const auto node = root["shutdown_timeout"])
        if (auto value = read_duration(node, "shutdown_timeout", errors)) config.shutdown_timeout_ms = *value;
    if (const auto node = root["module_dir"])
        if (auto value = read_string(node, "module_dir", errors)) config.module_dir = *value;
    if (const auto node = root["state_dir"])
        if (auto value = read_string(node, "state_dir", errors)) {
            if (value->empty())
                errors.add(node, "state_dir", "must not be empty");
            else
                config.state_dir = *value;
        }
    if (const auto node = root["user"])
        if (auto value = read_string(node, "user", errors)) {
            if (value->empty())
                errors.add(node, "user", "must name an account, e.g. nobody");
            else
                config.user = *value;
            config.user_line = line_of(node);
        }
    if (const auto node = root["reuseport"])
        if (auto value = read_bool(node, "reuseport", errors)) config.reuseport = *value;
    read_log(root["log"], config.log, errors);
    read_tracking(root["tracking"], config.tracking, errors);
    read_geoip(root["geoip"], config.geoip, errors);
    read_privacy(root["privacy"], config.privacy, errors);
    read_trusted_proxies(root["trusted_proxies"], config.trusted_proxies, errors);

    const YAML::Node protocols = root["protocols"];
    if (!protocols || (protocols.IsSequence() && protocols.size() == 0))
        errors.add(protocols ? protocols : root, "protocols", "at least one protocol module is required");
    config.protocols = read_modules(protocols, "protocols", true, errors);
    config.plugins = read_modules(root["plugins"], "plugins", false, errors);

    if (!errors.empty()) throw ConfigErrors(errors.take());
    return config;
}

int print_config_failure(const std::exception& failure) {
    if (const auto* errors = dynamic_cast<const ConfigErrors*>(&failure))
        for (const auto& error : errors->errors()) std::fprintf(stderr, "smprotocol: %s\n", error.c_str());
    else
        std::fprintf(stderr, "smprotocol: %s\n", failure.what());
    return 1;
}

Config load_config(const std::string& path, const std::string& environment) {
    std::ifstream in(path);
    if (!in) throw ConfigErrors({path + ": cannot read the configuration file"});
    std::stringstream text;
    text << in.rdbuf();
    return parse_config(text.str(), path, environment);
}

}  // namespace smp
