#include "log.hpp"

#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using smp::AccessLog;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "smp-log-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

// A finished request whose line names `target`, so that each line can be told apart.
smp_record request_for(const std::string& target) {
    smp_record record{};
    record.size = sizeof record;
    record.end_us = 1'700'000'000'000'000;
    record.client_ip = "192.0.2.1";
    record.method = "GET";
    record.target = target.c_str();
    record.protocol = "HTTP/1.1";
    record.user_agent = "curl/7.88";
    record.status = 200;
    record.body_bytes = 4096;
    record.received_bytes = 80;
    return record;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

// The length of the line AccessLog writes for `target`, newline included.
size_t line_length(const std::string& target) {
    TempDir dir;
    AccessLog log;
    log.open((dir.path / "probe.log").string(), 0);
    log.write(request_for(target));
    return fs::file_size(dir.path / "probe.log");
}

// Sends the default logger's lines to `out` while it lives.
struct CapturedLog {
    std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
    std::ostringstream out;
    CapturedLog() {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
    }
    ~CapturedLog() { spdlog::set_default_logger(previous); }
    size_t count(const std::string& text) const {
        size_t found = 0;
        const std::string all = out.str();
        for (auto at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++found;
        return found;
    }
};

}  // namespace

TEST_CASE("the access log holds its lines until flushed") {
    TempDir dir;
    const auto path = dir.path / "access.log";
    AccessLog log;
    log.open(path.string(), 64 * 1024);
    log.write(request_for("/a.bin"));
    log.write(request_for("/b.bin"));
    CHECK(log.has_buffered_lines());
    CHECK(fs::file_size(path) == 0);
    log.flush();
    CHECK_FALSE(log.has_buffered_lines());
    const auto lines = lines_of(read_file(path));
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] ==
          "192.0.2.1 - - [" + lines[0].substr(15, 26) + "] \"GET /a.bin HTTP/1.1\" 200 4096 \"-\" \"curl/7.88\" 80");
    CHECK(lines[1].find("\"GET /b.bin HTTP/1.1\"") != std::string::npos);
}

TEST_CASE("a full access log buffer is written as whole lines before the line that does not fit") {
    TempDir dir;
    const auto path = dir.path / "access.log";
    const size_t length = line_length("/0000.bin");
    AccessLog log;
    // Room for three lines and a half.
    log.open(path.string(), length * 7 / 2);
    for (int i = 0; i < 3; ++i) log.write(request_for("/000" + std::to_string(i) + ".bin"));
    CHECK(fs::file_size(path) == 0);
    log.write(request_for("/0003.bin"));
    // The three that fitted, each whole; the fourth waits in the buffer.
    const std::string written = read_file(path);
    CHECK(written.size() == 3 * length);
    CHECK(written.ends_with("\n"));
    CHECK(lines_of(written).size() == 3);
    CHECK(written.find("/0003.bin") == std::string::npos);
    log.flush();
    const auto lines = lines_of(read_file(path));
    REQUIRE(lines.size() == 4);
    for (int i = 0; i < 4; ++i) CHECK(lines[i].find("/000" + std::to_string(i) + ".bin") != std::string::npos);
}

TEST_CASE("a line longer than the access log buffer is written whole, after the buffered ones") {
    TempDir dir;
    const auto path = dir.path / "access.log";
    AccessLog log;
    log.open(path.string(), 300);
    log.write(request_for("/short.bin"));
    const std::string long_target = "/" + std::string(400, 'x');
    log.write(request_for(long_target));
    CHECK_FALSE(log.has_buffered_lines());
    const auto lines = lines_of(read_file(path));
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].find("/short.bin") != std::string::npos);
    CHECK(lines[1].find(long_target) != std::string::npos);
}

TEST_CASE("an unbuffered access log writes each line at once, and so does one that stopped buffering") {
    TempDir dir;
    const auto path = dir.path / "access.log";
    AccessLog unbuffered;
    unbuffered.open(path.string(), 0);
    unbuffered.write(request_for("/a.bin"));
    CHECK_FALSE(unbuffered.has_buffered_lines());
    CHECK(lines_of(read_file(path)).size() == 1);

    AccessLog stopping;
    stopping.open(path.string(), 64 * 1024);
    stopping.write(request_for("/b.bin"));
    CHECK(lines_of(read_file(path)).size() == 1);
    stopping.stop_buffering();
    CHECK(lines_of(read_file(path)).size() == 2);
    stopping.write(request_for("/c.bin"));
    CHECK(lines_of(read_file(path)).size() == 3);
}

TEST_CASE("the access log writes its buffer to the old file before it reopens") {
    TempDir dir;
    const auto path = dir.path / "access.log";
    AccessLog log;
    log.open(path.string(), 64 * 1024);
    log.write(request_for("/before.bin"));
    fs::rename(path, dir.path / "access.log.1");
    CHECK(log.reopen().empty());
    log.write(request_for("/after.bin"));
    log.flush();
    const auto old_lines = lines_of(read_file(dir.path / "access.log.1"));
    const auto new_lines = lines_of(read_file(path));
    REQUIRE(old_lines.size() == 1);
    REQUIRE(new_lines.size() == 1);
    CHECK(old_lines[0].find("/before.bin") != std::string::npos);
    CHECK(new_lines[0].find("/after.bin") != std::string::npos);
}

TEST_CASE("a full disk drops access log lines and says so once until a write succeeds") {
    TempDir dir;
    // The path is a link, first to /dev/full (every write fails with
    // ENOSPC), then to a file: reopen() follows it, as after logrotate.
    const auto path = dir.path / "access.log";
    fs::create_symlink("/dev/full", path);
    CapturedLog captured;
    AccessLog log;
    log.open(path.string(), 300);
    for (int i = 0; i < 10; ++i) log.write(request_for("/lost-" + std::to_string(i) + ".bin"));
    log.flush();
    CHECK_FALSE(log.has_buffered_lines());
    CHECK(log.dropped_lines() == 10);
    CHECK(captured.count("cannot write to") == 1);
    CHECK(captured.count("No space left on device") == 1);

    fs::remove(path);
    fs::create_symlink(dir.path / "real.log", path);
    CHECK(log.reopen().empty());
    log.write(request_for("/kept.bin"));
    log.flush();
    CHECK(captured.count("again; 10 line(s) were dropped") == 1);
    const auto lines = lines_of(read_file(dir.path / "real.log"));
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("/kept.bin") != std::string::npos);

    // A second episode is reported again.
    fs::remove(path);
    fs::create_symlink("/dev/full", path);
    CHECK(log.reopen().empty());
    log.write(request_for("/lost.bin"));
    log.flush();
    CHECK(captured.count("cannot write to") == 2);
    CHECK(log.dropped_lines() == 11);
}
