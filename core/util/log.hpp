// The core's logger (spdlog, stdout and an optional file) and the access log.
#pragma once

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
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

// Combined Log Format followed by the bytes received, one line per record.
// Lines gather in a buffer, as nginx's `access_log ... buffer=64k`, and each
// write(2) holds whole lines only: with O_APPEND the lines of several
// workers never interleave or split. The owner calls flush() on a timer, at
// a graceful stop and whenever it wants the lines on disk; reopen() flushes
// to the old file first.
class AccessLog {
   public:
    AccessLog() = default;
    ~AccessLog();
    AccessLog(const AccessLog&) = delete;
    AccessLog& operator=(const AccessLog&) = delete;

    // Opens (creates) `path` for appending; throws std::runtime_error naming
    // it. `buffer_size` bytes of lines are kept before a write; 0 writes
    // each line at once.
    void open(const std::string& path, size_t buffer_size);
    bool is_open() const { return fd_ >= 0; }
    // Writes what is buffered to the current file, then opens the same path
    // again in place of it (SIGUSR1); the descriptor number stays, so no
    // line is written to a closed one. The reason on failure, the old file
    // kept; empty on success.
    std::string reopen();
    // Formats the line; it is written now when unbuffered, else when the
    // buffer cannot take the next line or at the next flush().
    void write(const smp_record& record);
    // Writes the buffered lines with one write(2). A failure (a full disk)
    // drops them and is logged once until a write succeeds again: the
    // access log is not the record of truth, the tracking is.
    void flush();
    // Makes every further line go out at once (a stopping worker may be
    // killed at shutdown_timeout with whatever it still buffers).
    void stop_buffering();
    bool has_buffered_lines() const { return !buffer_.empty(); }
    uint64_t dropped_lines() const { return dropped_lines_; }

   private:
    // One write(2) of whole lines; counts and reports a failure.
    void write_lines(const std::string& lines, size_t line_count);

    int fd_ = -1;
    std::string path_;
    std::string line_;
    std::string buffer_;
    size_t buffer_size_ = 0;
    size_t buffered_line_count_ = 0;
    // Lines lost since the last successful write; nonzero means the failure
    // has been reported and is not again until a write succeeds.
    uint64_t lines_dropped_in_episode_ = 0;
    uint64_t dropped_lines_ = 0;
    std::string time_text_;
    int64_t time_second_ = -1;
};

}  // namespace smp
