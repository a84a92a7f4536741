// The core's logger (spdlog, stdout and an optional file) and the access log.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "config.hpp"
#include "smp_module.h"

namespace smp {

// Sets up the default logger; `role` prefixes each line ("master", "worker 1").
void setup_logging(const LogConfig& config);
// Changes the prefix, e.g. in a worker after fork.
void set_log_role(const std::string& role);
// SIGUSR1: opens log.file again by its name, so that after logrotate moved
// it the lines go to the new file. On failure the old file is kept and the
// reason returned; empty on success.
std::string reopen_log_files();
spdlog::level::level_enum to_spdlog(LogLevel level);
spdlog::level::level_enum to_spdlog(smp_log_level level);

// The ASCII banner of the original daemon, printed once at start.
void print_banner();

// Combined Log Format followed by the bytes received, one line per record,
// appended with one write(2) so the lines of several workers never interleave.
class AccessLog {
   public:
    AccessLog() = default;
    ~AccessLog();
    AccessLog(const AccessLog&) = delete;
    AccessLog& operator=(const AccessLog&) = delete;

    // Opens (creates) `path` for appending; throws std::runtime_error naming it.
    void open(const std::string& path);
    bool is_open() const { return fd_ >= 0; }
    // Opens the same path again in place of the current file (SIGUSR1);
    // the descriptor number stays, so no line is written to a closed one.
    // The reason on failure, the old file kept; empty on success.
    std::string reopen();
    void write(const smp_record& record);

   private:
    int fd_ = -1;
    std::string path_;
    std::string line_;
    std::string time_text_;
    int64_t time_second_ = -1;
};

}  // namespace smp
