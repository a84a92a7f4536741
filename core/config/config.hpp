// The daemon's configuration: the YAML file read into plain structs.
//
// Core keys are checked here. A module entry keeps its YAML node, which the
// loader checks against the module's own key table once the .so is loaded.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "client_class.hpp"

namespace smp {

// Every error found in a config file, each "file:line: key: message".
class ConfigErrors : public std::runtime_error {
   public:
    explicit ConfigErrors(std::vector<std::string> errors);
    const std::vector<std::string>& errors() const { return errors_; }

   private:
    std::vector<std::string> errors_;
};

// What reading a configuration threw, printed as a command prints it: each
// error of a ConfigErrors on its own line ("smprotocol: file:line: key:
// message"), else the exception's sentence. Returns 1, the exit code.
int print_config_failure(const std::exception& failure);

// Collects errors with the file and line they belong to.
class ErrorList {
   public:
    explicit ErrorList(std::string file) : file_(std::move(file)) {}
    void add(const YAML::Node& at, std::string_view key, std::string_view message);
    void add_line(int line, std::string_view key, std::string_view message);
    bool empty() const { return errors_.empty(); }
    const std::vector<std::string>& errors() const { return errors_; }
    std::vector<std::string> take() { return std::move(errors_); }
    const std::string& file() const { return file_; }

   private:
    std::string file_;
    std::vector<std::string> errors_;
};

// 1-based line of a node, 0 when yaml-cpp does not know it.
int line_of(const YAML::Node& node);
// Each key of `map` that appears twice is an error.
void check_repeated_keys(const YAML::Node& map, const std::string& prefix, ErrorList& errors);

struct ModuleEntry {
    std::string module;  // the .so name and the YAML name
    std::string key;     // "protocols[0]", for error messages
    int line = 0;
    YAML::Node node;  // the whole map, checked by the loader
    // Protocol entries only.
    std::string host;
    uint16_t port = 0;
};

enum class LogLevel { trace, debug, info, warn, error };

struct LogConfig {
    LogLevel level = LogLevel::info;
    std::string file;        // empty: stdout only
    std::string access_log;  // empty: none
    // Bytes of access log lines a worker gathers before one write(2), as
    // nginx's `buffer=64k`; 0 writes every line at once.
    int64_t access_log_buffer = 64 * 1024;
    // The longest a line waits in the buffer (nginx's `flush=1s`).
    int64_t access_log_flush_ms = 1000;
};

struct TrackingConfig {
    bool enabled = true;
    int64_t idle_window_ms = 30 * 60 * 1000;  // a download idle this long is finished
    // Past this many open downloads, the least recently active one is
    // finished early: the collector's memory is bounded (docs/tracking.md
    // has the bytes per download this default is measured from).
    int64_t max_open_downloads = 100'000;
    // Each worker's record log: how many bytes of records wait for the
    // collector before a worker has to drop one (docs/tracking.md).
    int64_t log_size = 256 << 20;
    // How often the collector checkpoints (docs/tracking.md, "Exactly
    // once"): a crashed collector replays at most about this much, and a
    // checkpoint written by a forked copy costs the collector a page fault
    // for every page it writes next. Sooner when a log's ring is a quarter
    // held.
    int64_t checkpoint_interval_ms = 10 * 1000;
    // How long the collector's loop may stop to encode a checkpoint itself
    // (a thread writes it); a state that takes longer is written by a
    // forked copy. 0: always forked.
    int64_t checkpoint_pause_ms = 5;
    // Stats collectors, each merging the downloads of its share of the
    // download keys (a worker writes a log for each). Read at start only.
    int collectors = 1;
    // Requests and finished downloads older than this are deleted from the
    // stores at the collector's start and once a day; 0 keeps everything.
    // The per-day totals are never deleted (docs/tracking.md, "Retention").
    int64_t retention_ms = 0;
    // The client class rules (docs/tracking.md): the file read, or empty
    // when the default file is absent and the rules compiled in are used.
    std::string client_classes;
    std::shared_ptr<const ClientClassRules> client_class_rules =
        std::shared_ptr<const ClientClassRules>(std::shared_ptr<void>(), &ClientClassRules::builtin());
};

// What the server keeps of a client's address (docs/privacy.md).
struct PrivacyConfig {
    // Low bits of the address zeroed before a record leaves the worker
    // (after the geo-IP lookup): 0 keeps the address whole.
    int anonymize_ipv4_bits = 0;
    int anonymize_ipv6_bits = 0;
    // The access log gets the shortened address too (when shortening).
    bool access_log = true;
    bool anonymizes() const { return anonymize_ipv4_bits > 0 || anonymize_ipv6_bits > 0; }
};

struct GeoIpConfig {
    std::string city_db;  // empty: none
    std::string asn_db;
};

struct Config {
    std::string path;
    std::string environment;  // APPLICATION_ENV applied, empty for none
    int workers = 1;
    int64_t max_connections = 1024;
    int backlog = 511;
    int64_t shutdown_timeout_ms = 30'000;
    bool reuseport = true;   // one listening socket per worker (SO_REUSEPORT)
    std::string module_dir;  // empty: found next to the binary or the install default
    // Where the server keeps its state: the default store's database
    // (stats.db) and the spool of batches a store could not take yet.
    std::string node;  // `node:`; empty: the host name (Runtime::node)
    std::string state_dir = "/var/lib/smprotocol";
    // The account the workers and the stats collector run as when the
    // server is started as root; empty: they keep the master's.
    std::string user;
    int user_line = 0;
    LogConfig log;
    TrackingConfig tracking;
    GeoIpConfig geoip;
    PrivacyConfig privacy;
    std::vector<std::string> trusted_proxies;  // CIDRs whose X-Forwarded-For / Forwarded is believed
    std::vector<ModuleEntry> protocols;
    std::vector<ModuleEntry> plugins;
};

// Reads and checks `path`; `environment` is APPLICATION_ENV (may be empty).
// Throws ConfigErrors listing everything wrong.
Config load_config(const std::string& path, const std::string& environment);
// The same from text, for tests; `name` stands for the file in errors.
Config parse_config(const std::string& text, const std::string& name, const std::string& environment);

std::optional<LogLevel> parse_log_level(std::string_view text);

// Typed reads of one scalar; each adds an error naming `key` and returns
// empty when the node is not of the type.
std::optional<std::string> read_string(const YAML::Node& node, std::string_view key, ErrorList& errors);
std::optional<int64_t> read_int(const YAML::Node& node, std::string_view key, ErrorList& errors);
std::optional<int64_t> read_size(const YAML::Node& node, std::string_view key, ErrorList& errors);
std::optional<int64_t> read_duration(const YAML::Node& node, std::string_view key, ErrorList& errors);
std::optional<bool> read_bool(const YAML::Node& node, std::string_view key, ErrorList& errors);
std::optional<std::vector<std::string>> read_string_list(const YAML::Node& node, std::string_view key,
                                                         ErrorList& errors);

}  // namespace smp
