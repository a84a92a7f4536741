#include "log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace smp {
namespace {

// Appends `text`, escaping what would break the line for log readers, as nginx does.
void append_escaped(std::string& line, const char* text) {
    for (const char* p = text; *p; ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            char escaped[5];
            std::snprintf(escaped, sizeof escaped, "\\x%02X", c);
            line += escaped;
        } else {
            line += static_cast<char>(c);
        }
    }
}

void append_quoted(std::string& line, const char* text) {
    line += '"';
    if (text == nullptr || *text == '\0')
        line += '-';
    else
        append_escaped(line, text);
    line += '"';
}

}  // namespace

spdlog::level::level_enum to_spdlog(LogLevel level) {
    switch (level) {
        case LogLevel::trace: return spdlog::level::trace;
        case LogLevel::debug: return spdlog::level::debug;
        case LogLevel::info: return spdlog::level::info;
        case LogLevel::warn: return spdlog::level::warn;
        case LogLevel::error: return spdlog::level::err;
    }
    return spdlog::level::info;
}

spdlog::level::level_enum to_spdlog(smp_log_level level) {
    return to_spdlog(static_cast<LogLevel>(std::clamp(static_cast<int>(level), 0, 4)));
}

namespace {

// What setup_logging and set_log_role were given, for reopen_log_files.
LogConfig current_config;
std::string current_role = "master";

}  // namespace

void setup_logging(const LogConfig& config) {
    std::vector<spdlog::sink_ptr> sinks;
    sinks.push_back(std::make_shared<spdlog::sinks::stdout_color_sink_mt>());
    if (!config.file.empty()) {
        try {
            sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.file));
        } catch (const spdlog::spdlog_ex& e) {
            throw std::runtime_error("log.file: cannot open " + config.file + ": " + e.what());
        }
    }
    auto logger = std::make_shared<spdlog::logger>("smprotocol", sinks.begin(), sinks.end());
    logger->set_level(to_spdlog(config.level));
    // Every line is written out at once: workers share the files, and a line
    // buffered at fork time would otherwise be written twice.
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
    current_config = config;
    set_log_role(current_role);
}

void set_log_role(const std::string& role) {
    current_role = role;
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [" + role + "] %v");
}

std::string reopen_log_files() {
    if (current_config.file.empty()) return {};
    try {
        setup_logging(current_config);
    } catch (const std::exception& e) {
        return e.what();
    }
    return {};
}

void print_banner() {
    std::fputs(R"(    _____ __  _______             __                   __
   / ___//  |/  / __ \_________  / /_____  _________  / /
   \__ \/ /|_/ / /_/ / ___/ __ \/ __/ __ \/ ___/ __ \/ /
  ___/ / /  / / ____/ /  / /_/ / /_/ /_/ / /__/ /_/ / /
 /____/_/  /_/_/   /_/   \____/\__/\____/\___/\____/_/
)",
               stdout);
    std::fflush(stdout);
}

AccessLog::~AccessLog() {
    if (fd_ >= 0) close(fd_);
}

void AccessLog::open(const std::string& path, size_t buffer_size) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error("log.access_log: cannot open " + path + ": " + std::strerror(errno));
    path_ = path;
    buffer_size_ = buffer_size;
    buffer_.reserve(buffer_size_);
}

std::string AccessLog::reopen() {
    if (fd_ < 0) return {};
    // The buffered lines belong to the file being rotated: written there,
    // logrotate's copy has every line up to the signal.
    flush();
    const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return "log.access_log: cannot open " + path_ + ": " + std::strerror(errno);
    dup3(fd, fd_, O_CLOEXEC);
    ::close(fd);
    return {};
}

void AccessLog::flush() {
    if (buffer_.empty()) return;
    write_lines(buffer_, buffered_line_count_);
    buffer_.clear();
    buffered_line_count_ = 0;
}

void AccessLog::stop_buffering() {
    flush();
    buffer_size_ = 0;
}

void AccessLog::write_lines(const std::string& lines, size_t line_count) {
    const ssize_t written = ::write(fd_, lines.data(), lines.size());
    if (written == static_cast<ssize_t>(lines.size())) {
        if (lines_dropped_in_episode_ > 0) {
            spdlog::warn("log.access_log: writing to {} again; {} line(s) were dropped", path_,
                         lines_dropped_in_episode_);
            lines_dropped_in_episode_ = 0;
        }
        return;
    }
    // A local file only refuses or cuts a write when the disk is full or
    // failing. Retrying would block the worker or spin on the loop, and
    // writing the rest of a cut line later could put it after another
    // worker's line; the lines are dropped instead (a cut one stays cut, as
    // in nginx). Said once per episode: a full disk would repeat it on every
    // flush.
    const int error = written < 0 ? errno : ENOSPC;
    if (lines_dropped_in_episode_ == 0)
        spdlog::error("log.access_log: cannot write to {}: {}; dropping lines until a write succeeds", path_,
                      std::strerror(error));
    lines_dropped_in_episode_ += line_count;
    dropped_lines_ += line_count;
}

void AccessLog::write(const smp_record& record) {
    if (fd_ < 0) return;
    const int64_t second = record.end_us / 1'000'000;
    if (second != time_second_) {
        time_second_ = second;
        const time_t t = static_cast<time_t>(second);
        struct tm local {};
        localtime_r(&t, &local);
        char text[64];
        strftime(text, sizeof text, "[%d/%b/%Y:%H:%M:%S %z]", &local);
        time_text_ = text;
    }
    line_.clear();
    line_ += record.client_ip ? record.client_ip : "-";
    line_ += " - - ";
    line_ += time_text_;
    line_ += ' ';
    if (record.method != nullptr) {
        line_ += '"';
        append_escaped(line_, record.method);
        line_ += ' ';
        append_escaped(line_, record.target ? record.target : "-");
        line_ += ' ';
        append_escaped(line_, record.protocol ? record.protocol : "-");
        line_ += '"';
    } else {
        line_ += "\"-\"";
    }
    line_ += ' ';
    line_ += std::to_string(record.status);
    line_ += ' ';
    line_ += std::to_string(record.body_bytes);
    line_ += ' ';
    append_quoted(line_, record.referer);
    line_ += ' ';
    append_quoted(line_, record.user_agent);
    // After the combined fields, the bytes received (nginx's $request_length).
    line_ += ' ';
    line_ += std::to_string(smp_record_received_bytes(&record));
    line_ += '\n';
    if (line_.size() > buffer_size_ - buffer_.size()) {
        flush();
        // Unbuffered, or a line longer than the whole buffer: on its own,
        // still one write(2) of one whole line.
        if (line_.size() > buffer_size_) {
            write_lines(line_, 1);
            return;
        }
    }
    buffer_ += line_;
    ++buffered_line_count_;
}

}  // namespace smp
