// pipeline_bench: the tracking pipeline as the server runs it, measured end
// to end. Synthetic close records are appended to real record logs (as W
// workers would), read by the real stats collector (forked and started as
// the master starts it, from a Runtime built from a config file as the
// server builds it) and stored by its storage thread (sqlite by default).
//
// The collector (its loop and its storage thread) is pinned to one CPU and
// the writer to the other, so that the figure is what one core of collector
// and store takes in, with the workers' side on a core of its own. With
// --collectors N (tracking.collectors), N collectors run, each on the logs of
// its shard, collector k pinned to CPU k modulo the CPUs there are: on a
// machine of 2 CPUs the writer then shares its CPU with a collector. Unlike a
// worker, the writer never drops a record: when a log is full it tries again
// after a short sleep, and counts how often, so that every record goes
// through and the rate is that of the whole pipeline.
//
// Modes (--store):
//   sqlite  the server's default store (no store configured: state_dir/stats.db);
//   null    tests/bench/null_store.c, a store that counts records and keeps
//           nothing: the collector's whole work for a store, without a database;
//   none    no store at all: the collector reads, decodes and merges records
//           into downloads, journals and checkpoints, but builds no batch.
//           The server always adds the sqlite store when tracking is on and
//           none is named (core/config/loader.cpp), so the Runtime is built as the
//           server builds it and its store modules are then taken out of it.
// With several collectors, all of them store into the one sqlite database,
// as the server's do. The null store is for one collector only: each
// collector's copy would write its own count over the others' in its one file.
//
// tests/bench/pipeline_bench.py runs it several times; tests/bench/README.md
// says what each figure means. The last line of the output is
// `PIPELINE_BENCH {json}`; everything else is for a person to read.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "collector.hpp"
#include "collector_checkpoint.hpp"
#include "config.hpp"
#include "download_key.hpp"
#include "log.hpp"
#include "record_log.hpp"
#include "runtime.hpp"
#include "units.hpp"

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: pipeline_bench [--records N] [--workers W] [--collectors N] [--store sqlite|null|none]\n"
    "                      [--log-size SIZE] [--timeout S] [--perf-data FILE [--perf-args ARGS]] [--seed N]\n"
    "                      [--keep-tmp]\n"
    "  --records N        close records to push through (default 2000000)\n"
    "  --workers W        simulated workers: a record log each per collector (default 2)\n"
    "  --collectors N     tracking.collectors: collectors, each on its shard of the records (default 1)\n"
    "  --store MODE       sqlite (the default store), null (a store that keeps nothing; one collector only),\n"
    "                     none (no store)\n"
    "  --log-size SIZE    tracking.log_size of each log (default: the server's, 256MiB)\n"
    "  --timeout S        give up when the pipeline has not stored everything S s after the last append "
    "(default 300)\n"
    "  --perf-data FILE   run `perf record -p <collectors>` from the first append until all is stored\n"
    "  --perf-args ARGS   perf record's options, split at spaces (default \"-g\")\n"
    "  --seed N           the traffic generator's seed (default 1)\n"
    "  --keep-tmp         keep the temp dir (config, state_dir, database)\n";

// The writer on one CPU, the collector and its storage thread on the other.
// With several collectors, collector k is on CPU k modulo the CPUs there are
// (collector_cpu): more collectors than CPUs would be measured sharing them.
constexpr int kCollectorCpu = 0;
constexpr int kWriterCpu = 1;
// How long the writer sleeps before trying a full log again. The collector
// releases a log's space only when it commits a checkpoint (every 2 s, once
// the stores have the batches before it), so the writer waits in steps
// short against that and counts each try.
constexpr auto kFullLogSleep = std::chrono::milliseconds(1);
constexpr auto kPollEvery = std::chrono::milliseconds(2);
// The database is read less often: each read is a read transaction of
// another connection, past whose snapshot the store cannot checkpoint its
// WAL. Every 50 ms it is there too seldom to change what is measured, and
// often enough for runs of seconds.
constexpr auto kDatabasePollEvery = std::chrono::milliseconds(50);
constexpr auto kReadyTimeout = std::chrono::seconds(30);
// After everything is stored, how long to wait for the collector to delete
// the logs (its next committed checkpoint), and for it to stop at SIGTERM.
constexpr auto kLogsGoneTimeout = std::chrono::seconds(15);
constexpr auto kStopTimeout = std::chrono::seconds(120);

// The traffic's shape: clients and their agents, files and their sizes.
constexpr size_t kClients = 50'000;
constexpr size_t kAgents = 100;
constexpr size_t kAgentBytes = 100;
constexpr size_t kFiles = 10'000;
// A session is one client's download of one file on one connection: most
// fetch it whole (200), the others in 2 to 4 consecutive ranges (206), so
// that about half the records are each.
constexpr double kWholeFileSessions = 0.75;
constexpr size_t kMaxRequestsPerSession = 4;

struct Options {
    uint64_t records = 2'000'000;
    int workers = 2;
    int collectors = 1;
    std::string store = "sqlite";
    std::string log_size;  // empty: the server's default
    double timeout_s = 300;
    std::string perf_data;
    std::string perf_args = "-g";
    uint64_t seed = 1;
    bool keep_tmp = false;
};

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "pipeline_bench: %s\n%s", message.c_str(), kUsage);
    std::exit(2);
}

Options parse_options(int argc, char** argv) {
    static const option long_options[] = {{"records", required_argument, nullptr, 'n'},
                                          {"workers", required_argument, nullptr, 'w'},
                                          {"collectors", required_argument, nullptr, 'c'},
                                          {"store", required_argument, nullptr, 's'},
                                          {"log-size", required_argument, nullptr, 'l'},
                                          {"timeout", required_argument, nullptr, 't'},
                                          {"perf-data", required_argument, nullptr, 'p'},
                                          {"perf-args", required_argument, nullptr, 'g'},
                                          {"seed", required_argument, nullptr, 'r'},
                                          {"keep-tmp", no_argument, nullptr, 'k'},
                                          {"help", no_argument, nullptr, 'h'},
                                          {nullptr, 0, nullptr, 0}};
    Options options;
    int option = 0;
    while ((option = getopt_long(argc, argv, "h", long_options, nullptr)) != -1) {
        switch (option) {
            case 'n': options.records = std::strtoull(optarg, nullptr, 10); break;
            case 'w': options.workers = std::atoi(optarg); break;
            case 'c': options.collectors = std::atoi(optarg); break;
            case 's': options.store = optarg; break;
            case 'l': options.log_size = optarg; break;
            case 't': options.timeout_s = std::atof(optarg); break;
            case 'p': options.perf_data = optarg; break;
            case 'g': options.perf_args = optarg; break;
            case 'r': options.seed = std::strtoull(optarg, nullptr, 10); break;
            case 'k': options.keep_tmp = true; break;
            case 'h': std::fputs(kUsage, stdout); std::exit(0);
            default: std::fputs(kUsage, stderr); std::exit(2);
        }
    }
    if (optind < argc) usage_error(std::string("unexpected argument '") + argv[optind] + "'");
    if (options.records == 0) usage_error("--records must be at least 1");
    if (options.workers < 1 || options.workers > 64) usage_error("--workers must be between 1 and 64");
    if (options.store != "sqlite" && options.store != "null" && options.store != "none")
        usage_error("--store must be sqlite, null or none");
    // The same bounds as tracking.collectors (core/config/config.cpp).
    if (options.collectors < 1 || options.collectors > 64) usage_error("--collectors must be between 1 and 64");
    if (options.store == "null" && options.collectors > 1)
        usage_error("--store null takes one collector: each collector's null store would overwrite the others' count");
    if (!options.log_size.empty() && !smp::parse_size(options.log_size))
        usage_error("--log-size must be a size such as 1MiB or 268435456");
    if (options.timeout_s <= 0) usage_error("--timeout must be positive");
    return options;
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

int64_t wall_clock_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// The CPU collector `shard` of `collectors` is pinned to: CPU 0 when it is
// the only one, else one CPU each, round the CPUs there are.
int collector_cpu(int shard, int collectors) {
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (collectors == 1 || cpus <= 0) return kCollectorCpu;
    return shard % static_cast<int>(cpus);
}

bool pin_to_cpu(pid_t pid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(pid, sizeof set, &set) == 0;
}

// ---- the traffic ------------------------------------------------------------------

// Download sessions of clients fetching files, as http_download reports
// them: a record per request, its strings held here until the next session.
class Traffic {
   public:
    Traffic(uint64_t seed, std::string node) : random_(seed), node_(std::move(node)) {
        addresses_.reserve(kClients);
        for (size_t i = 0; i < kClients; ++i) {
            // Mostly IPv4, a fifth IPv6, as a public server sees them.
            if (i % 5 == 4)
                addresses_.push_back(fmt::format("2001:db8:{:x}:{:x}::{:x}", pick(0xffff), pick(0xffff), pick(0xffff)));
            else
                addresses_.push_back(fmt::format("{}.{}.{}.{}", 1 + pick(222), pick(255), pick(255), 1 + pick(253)));
        }
        static const char* const kBrowsers[] = {
            "Mozilla/5.0 (X11; Linux x86_64; rv:{}.0) Gecko/20100101 Firefox/{}.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.0.0",
            "Wget/1.{}.{} (linux-gnu)",
            "curl/8.{}.{}",
        };
        for (size_t i = 0; i < kAgents; ++i) {
            std::string agent = fmt::format(fmt::runtime(kBrowsers[i % 4]), 60 + i, i % 10);
            // Every agent is kAgentBytes long: padded as some crawlers' are.
            agent += fmt::format(" +https://example.net/bot/{}", i);
            agent.resize(kAgentBytes, '.');
            agents_.push_back(std::move(agent));
        }
        static const char* const kKinds[] = {"tar.gz", "iso", "zip", "deb", "bin"};
        for (size_t i = 0; i < kFiles; ++i) {
            paths_.push_back(
                fmt::format("releases/v{}.{}/package-{:05}.{}", i / 1000, (i / 100) % 10, i, kKinds[i % 5]));
            // From 4 KiB to 2 GiB, spread evenly in log scale.
            const double exponent = 12.0 + 19.0 * std::uniform_real_distribution<double>(0, 1)(random_);
            sizes_.push_back(static_cast<uint64_t>(std::exp2(exponent)));
            const uint64_t mtime_ns = 1'700'000'000'000'000'000ULL + random_() % 100'000'000'000'000'000ULL;
            etags_.push_back(fmt::format("\"{:x}-{:x}\"", sizes_.back(), mtime_ns));
        }
        for (const auto& path : paths_) targets_.push_back("/" + path);
    }

    // The records of the next session, 1 to kMaxRequestsPerSession.
    std::span<const smp_record> next_session(uint32_t worker_id) {
        const size_t client = pick(kClients - 1);
        const size_t file = pick(kFiles - 1);
        const uint64_t size = sizes_[file];
        const bool whole = std::uniform_real_distribution<double>(0, 1)(random_) < kWholeFileSessions;
        const size_t requests = whole ? 1 : 2 + pick(kMaxRequestsPerSession - 2);
        const uint64_t connection = ++connection_;
        const uint16_t port = static_cast<uint16_t>(1024 + pick(65535 - 1024));
        const std::string& agent = agents_[client % kAgents];  // a client keeps its agent
        const int64_t now = wall_clock_us();
        for (size_t i = 0; i < requests; ++i) {
            smp_record& record = session_[i];
            record = smp_record{};
            record.size = sizeof record;
            record.connection_id = connection;
            record.request_id = i + 1;
            record.worker_id = worker_id;
            record.module = "http_download";
            record.node = node_.c_str();
            // Requests of a session follow each other on the connection.
            record.start_us = now + static_cast<int64_t>(i) * 2000;
            record.end_us = record.start_us + 1000;
            record.client_ip = addresses_[client].c_str();
            record.client_port = port;
            record.method = "GET";
            record.path = paths_[file].c_str();
            record.target = targets_[file].c_str();
            record.protocol = "HTTP/1.1";
            record.user_agent = agent.c_str();
            record.etag = etags_[file].c_str();
            record.file_size = static_cast<int64_t>(size);
            smp_interval& sent = intervals_[i];
            if (whole) {
                record.status = 200;
                sent = {0, size - 1};
                record.header_bytes = 230;
            } else {
                record.status = 206;
                sent = {size * i / requests, size * (i + 1) / requests - 1};
                ranges_[i] = i + 1 < requests ? fmt::format("bytes={}-{}", sent.first, sent.last)
                                              : fmt::format("bytes={}-", sent.first);
                record.range = ranges_[i].c_str();
                record.header_bytes = 290;
            }
            record.intervals = &sent;
            record.interval_count = 1;
            record.body_bytes = sent.last - sent.first + 1;
            record.received_bytes = 100 + targets_[file].size() + agent.size();
            record.reason = SMP_END_COMPLETED;
        }
        return {session_.data(), requests};
    }

   private:
    // Uniform in [0, last].
    size_t pick(size_t last) { return std::uniform_int_distribution<size_t>(0, last)(random_); }

    std::mt19937_64 random_;
    std::string node_;
    std::vector<std::string> addresses_;
    std::vector<std::string> agents_;
    std::vector<std::string> paths_;
    std::vector<std::string> targets_;
    std::vector<std::string> etags_;
    std::vector<uint64_t> sizes_;
    std::array<smp_record, kMaxRequestsPerSession> session_{};
    std::array<smp_interval, kMaxRequestsPerSession> intervals_{};
    std::array<std::string, kMaxRequestsPerSession> ranges_;
    uint64_t connection_ = 0;
};

// ---- watching the collector -------------------------------------------------------------

// The time each thread of a process ran, in ns from schedstat (finer than
// the clock ticks of /proc/<pid>/stat), by thread id.
std::map<pid_t, uint64_t> thread_cpu_ns(pid_t pid) {
    std::map<pid_t, uint64_t> threads;
    const std::string tasks = fmt::format("/proc/{}/task", pid);
    DIR* listing = opendir(tasks.c_str());
    if (listing == nullptr) return threads;
    while (const dirent* entry = readdir(listing)) {
        if (entry->d_name[0] == '.') continue;
        std::ifstream schedstat(tasks + "/" + entry->d_name + "/schedstat");
        uint64_t ran_ns = 0;
        if (schedstat >> ran_ns) threads[std::atoi(entry->d_name)] = ran_ns;
    }
    closedir(listing);
    return threads;
}

// The time CPU `cpu` was busy since boot, in seconds: every field of its
// line in /proc/stat but idle and iowait (guest time is in user already).
double cpu_busy_s(int cpu) {
    std::ifstream stat_file("/proc/stat");
    const std::string name = fmt::format("cpu{}", cpu);
    std::string line;
    while (std::getline(stat_file, line)) {
        std::istringstream fields(line);
        std::string label;
        fields >> label;
        if (label != name) continue;
        uint64_t ticks[8] = {};
        for (auto& value : ticks) fields >> value;
        const uint64_t busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
        return static_cast<double>(busy) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
    return 0;
}

// The CPU time of the children a process has waited for (its checkpoint
// writers), in seconds: cutime + cstime of /proc/<pid>/stat.
double children_cpu_s(pid_t pid) {
    std::ifstream stat_file(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    const auto close_paren = text.rfind(')');
    if (close_paren == std::string::npos) return 0;
    std::istringstream fields(text.substr(close_paren + 2));
    std::string field;
    // Fields from the third (state) on; cutime and cstime are the 16th and 17th.
    double ticks = 0;
    for (int number = 3; number <= 17 && fields >> field; ++number)
        if (number >= 16) ticks += std::atof(field.c_str());
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A line of /proc/<pid>/status, in KiB ("VmHWM").
uint64_t status_kib(pid_t pid, const std::string& key) {
    std::ifstream status(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(status, line))
        if (line.starts_with(key + ":")) return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
    return 0;
}

// The sum of a line of /proc/<pid>/status over the collectors, in KiB.
uint64_t status_kib(const std::vector<pid_t>& pids, const std::string& key) {
    uint64_t kib = 0;
    for (const pid_t pid : pids) kib += status_kib(pid, key);
    return kib;
}

// The highest RssAnon of the collectors together seen, sampled at most every
// 50 ms: their own memory (their batches, open downloads, sqlite's caches),
// without the log pages they map.
class AnonymousPeak {
   public:
    explicit AnonymousPeak(std::vector<pid_t> pids) : pids_(std::move(pids)) {}
    void sample() {
        const auto now = Clock::now();
        if (now - sampled_at_ < std::chrono::milliseconds(50)) return;
        sampled_at_ = now;
        note(status_kib(pids_, "RssAnon"));
    }
    void note(uint64_t kib) { peak_kib_ = std::max(peak_kib_, kib); }
    uint64_t peak_kib() const { return peak_kib_; }

   private:
    std::vector<pid_t> pids_;
    Clock::time_point sampled_at_{};
    uint64_t peak_kib_ = 0;
};

// The forked collector: whether it still runs, and how it ended.
class CollectorProcess {
   public:
    struct Exit {
        bool by_itself = false;  // not killed here for being too slow to stop
        int status = 0;
        rusage usage{};
    };
    explicit CollectorProcess(pid_t pid) : pid_(pid) {}
    pid_t pid() const { return pid_; }
    // False once it has exited (then reaped, its status kept).
    bool running() {
        if (exit_) return false;
        Exit exit;
        if (wait4(pid_, &exit.status, WNOHANG, &exit.usage) != pid_) return true;
        exit.by_itself = true;
        exit_ = exit;
        return false;
    }
    // SIGTERM, then until `deadline` for it to stop, then SIGKILL. Several
    // collectors are all asked first (ask_to_stop), so that they stop
    // together as the master's do, not one after the other.
    void ask_to_stop() {
        if (running()) kill(pid_, SIGTERM);
    }
    const Exit& stop(Clock::time_point deadline) {
        ask_to_stop();
        while (running() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (!exit_) {
            kill(pid_, SIGKILL);
            Exit exit;
            wait4(pid_, &exit.status, 0, &exit.usage);
            exit_ = exit;
        }
        return *exit_;
    }
    std::string how_it_ended() const {
        if (!exit_) return "running";
        if (!exit_->by_itself) return "killed: it did not stop in time";
        if (WIFEXITED(exit_->status)) return fmt::format("exit {}", WEXITSTATUS(exit_->status));
        return fmt::format("killed by signal {} ({})", WTERMSIG(exit_->status), strsignal(WTERMSIG(exit_->status)));
    }

   private:
    pid_t pid_;
    std::optional<Exit> exit_;
};

// Every collector, one per shard.
class Collectors {
   public:
    void add(pid_t pid) { processes_.emplace_back(pid); }
    size_t size() const { return processes_.size(); }
    CollectorProcess& operator[](size_t shard) { return processes_[shard]; }
    std::vector<pid_t> pids() const {
        std::vector<pid_t> pids;
        for (const auto& process : processes_) pids.push_back(process.pid());
        return pids;
    }
    // A shard whose collector ended is never read again: the run is over.
    bool all_running() {
        return std::all_of(processes_.begin(), processes_.end(), [](auto& process) { return process.running(); });
    }
    void stop(Clock::duration timeout) {
        for (auto& process : processes_) process.ask_to_stop();
        const auto deadline = Clock::now() + timeout;
        for (auto& process : processes_) process.stop(deadline);
    }
    // "exit 0", or each one's with its number when they are several.
    std::string how_they_ended() const {
        if (processes_.size() == 1) return processes_[0].how_it_ended();
        std::string text;
        for (size_t shard = 0; shard < processes_.size(); ++shard)
            text +=
                fmt::format("{}collector {}: {}", shard == 0 ? "" : ", ", shard + 1, processes_[shard].how_it_ended());
        return text;
    }

   private:
    std::vector<CollectorProcess> processes_;
};

// ---- the writer's side ----------------------------------------------------------------

struct WriterLog {
    smp::RecordLogWriter writer;
    smp::MappedLog view;  // the same log, for its header
    uint64_t appended = 0;
};

struct WriterStats {
    uint64_t refused_tries = 0;   // appends that found the log full and were tried again
    uint64_t records_waited = 0;  // records that found the log full at least once
    double waited_s = 0;          // time spent sleeping on full logs
};

// Appends `record`, waiting for room as long as it takes the collector to
// make some; false when the collector died, or made none for `patience`.
bool append_until_taken(WriterLog& log, const smp_record& record, WriterStats& stats, AnonymousPeak& memory,
                        Collectors& collectors, Clock::duration patience) {
    bool refused = false;
    Clock::time_point give_up{};
    while (!log.writer.append(record, smp::RecordKind::close, static_cast<uint32_t>(getpid()))) {
        // The record is not dropped but tried again: the header's count of
        // dropped records, which the collector reports, is put back.
        log.view.header().dropped.fetch_sub(1, std::memory_order_relaxed);
        ++stats.refused_tries;
        const auto before = Clock::now();
        if (!refused) {
            ++stats.records_waited;
            give_up = before + patience;
        }
        refused = true;
        if (!collectors.all_running() || before >= give_up) return false;
        memory.sample();
        std::this_thread::sleep_for(kFullLogSleep);
        stats.waited_s += seconds_between(before, Clock::now());
    }
    ++log.appended;
    return true;
}

// How far the collector has read each log, from its journal: each poll of
// the logs appends "read log L up to record I" and writes it at once. Old
// journals are deleted after a checkpoint, so the highest seen is kept.
class ReadProgress {
   public:
    explicit ReadProgress(std::string dir) : dir_(std::move(dir)) {}
    void poll() {
        for (uint64_t generation : smp::list_journals(dir_))
            for (const auto& entry : smp::read_journal(smp::journal_path(dir_, generation)))
                if (entry.kind == smp::JournalEntry::read) read_to_[entry.a] = std::max(read_to_[entry.a], entry.b);
    }
    uint64_t read_to(uint64_t log) const {
        auto found = read_to_.find(log);
        return found == read_to_.end() ? 0 : found->second;
    }

   private:
    std::string dir_;
    std::map<uint64_t, uint64_t> read_to_;
};

struct SqliteCloser {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct StatementCloser {
    void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};

// The store's rows, read through a read-only connection of its own (WAL:
// it never holds the storage thread back).
class StoredRows {
   public:
    explicit StoredRows(std::string path) : path_(std::move(path)) {}
    // The requests stored: the sum of the blocks' counts (the store keeps
    // requests in blocks of up to 1,024, docs/tracking.md), cheap to poll.
    std::optional<uint64_t> last_request() { return query("SELECT coalesce(sum(count), 0) FROM request_blocks"); }
    std::optional<uint64_t> count(const char* table) {
        return query(fmt::format("SELECT count(*) FROM {}", table).c_str());
    }

   private:
    std::optional<uint64_t> query(const char* sql) {
        if (!db_) {
            sqlite3* raw = nullptr;
            // The store creates the database when it starts: until then, none.
            if (sqlite3_open_v2(path_.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
                sqlite3_close_v2(raw);
                return std::nullopt;
            }
            db_.reset(raw);
            sqlite3_busy_timeout(raw, 1000);
        }
        sqlite3_stmt* raw = nullptr;
        if (sqlite3_prepare_v2(db_.get(), sql, -1, &raw, nullptr) != SQLITE_OK) return std::nullopt;
        std::unique_ptr<sqlite3_stmt, StatementCloser> statement(raw);
        if (sqlite3_step(raw) != SQLITE_ROW) return std::nullopt;
        return static_cast<uint64_t>(sqlite3_column_int64(raw, 0));
    }

    std::string path_;
    std::unique_ptr<sqlite3, SqliteCloser> db_;
};

// What the null store was given so far: request records, download rows.
std::array<uint64_t, 2> read_null_store_totals(const std::string& path) {
    std::array<uint64_t, 2> totals{};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return totals;
    if (pread(fd, totals.data(), sizeof totals, 0) != static_cast<ssize_t>(sizeof totals)) totals = {};
    ::close(fd);
    return totals;
}

// ---- the collector ------------------------------------------------------------------------

// The child: the collector as core/process/master_child.cpp's become_collector starts it.
[[noreturn]] void become_collector(smp::Runtime& runtime, int shard, int collectors) {
    int code = 1;
    try {
        // The master blocks its stop signals before it forks a child, which
        // reads them from a signalfd on its loop.
        sigset_t signals;
        sigemptyset(&signals);
        for (int signal : {SIGTERM, SIGQUIT, SIGUSR1}) sigaddset(&signals, signal);
        sigprocmask(SIG_BLOCK, &signals, nullptr);
        // Never outlives the benchmark, whatever ends it.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        const int cpu = collector_cpu(shard, collectors);
        if (!pin_to_cpu(0, cpu)) spdlog::warn("cannot pin the collector to CPU {}", cpu);
        // Named apart from a server's collector (smp-collector): other work on
        // this machine that finds processes by name must not take it for one.
        prctl(PR_SET_NAME, "pipebench-coll");
        smp::set_log_role(collectors > 1 ? fmt::format("collector {}", shard + 1) : "collector");
        smp::Collector collector(runtime, smp::record_log_dir(runtime.config.state_dir, shard), shard);
        code = collector.run();
    } catch (const std::exception& e) {
        spdlog::critical("stats collector failed: {}", e.what());
    }
    spdlog::default_logger()->flush();
    std::fflush(stdout);
    _exit(code);
}

// `perf record` attached to `pid`, stopped with SIGINT as a person would.
pid_t start_perf(const Options& options, const std::vector<pid_t>& pids) {
    std::string pid_list;
    for (const pid_t pid : pids) pid_list += fmt::format("{}{}", pid_list.empty() ? "" : ",", pid);
    const pid_t perf = fork();
    if (perf == 0) {
        std::vector<std::string> words = {"perf", "record", "-o", options.perf_data, "-p", pid_list};
        std::istringstream extra(options.perf_args);
        for (std::string word; extra >> word;) words.push_back(word);
        std::vector<char*> arguments;
        for (auto& word : words) arguments.push_back(word.data());
        arguments.push_back(nullptr);
        execvp("perf", arguments.data());
        std::perror("pipeline_bench: perf");
        _exit(127);
    }
    return perf;
}

void stop_perf(pid_t perf) {
    if (perf <= 0) return;
    kill(perf, SIGINT);
    int status = 0;
    waitpid(perf, &status, 0);
}

double rusage_cpu_s(const rusage& usage) {
    const auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// ---- the run ------------------------------------------------------------------------------

// A free TCP port on 127.0.0.1: the config needs a protocol, and the
// Runtime binds its listener (closed at once: nothing is served).
uint16_t free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    uint16_t port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
        port = ntohs(address.sin_port);
    ::close(fd);
    if (port == 0) throw std::runtime_error("cannot find a free port on 127.0.0.1");
    return port;
}

// The modules the config names, linked into one directory: module_dir is
// one directory, and the build keeps protocols, plugins and this
// benchmark's store in three.
std::string link_modules(const std::string& temp) {
    const std::string dir = temp + "/modules";
    std::filesystem::create_directories(dir);
    const std::pair<const char*, std::string> modules[] = {
        {"http_download", std::string(PIPELINE_BENCH_BUILD_ROOT) + "/protocols/http_download/http_download.so"},
        {"sqlite", std::string(PIPELINE_BENCH_BUILD_ROOT) + "/plugins/sqlite/sqlite.so"},
        {"null_store", std::string(PIPELINE_BENCH_MODULE_DIR) + "/null_store.so"},
    };
    for (const auto& [name, path] : modules) {
        if (access(path.c_str(), R_OK) != 0) throw std::runtime_error(path + " is missing: build it first (ninja -C)");
        std::filesystem::create_symlink(path, dir + "/" + name + ".so");
    }
    return dir;
}

std::string write_config(const Options& options, const std::string& temp, const std::string& module_dir) {
    const std::string files = temp + "/files";
    std::filesystem::create_directories(files);
    std::string text = fmt::format(
        "workers: {}\n"
        "state_dir: {}/state\n"
        "module_dir: {}\n"
        "log: {{level: warn}}\n"
        "tracking:\n"
        "  enabled: true\n"
        "  collectors: {}\n",
        options.workers, temp, module_dir, options.collectors);
    if (!options.log_size.empty()) text += fmt::format("  log_size: {}\n", options.log_size);
    text += fmt::format(
        "protocols:\n"
        "  - module: http_download\n"
        "    host: 127.0.0.1\n"
        "    port: {}\n"
        "    root: {}\n",
        free_port(), files);
    // sqlite: no store named, so the server adds its default one.
    if (options.store == "null")
        text += fmt::format(
            "plugins:\n"
            "  - module: null_store\n"
            "    count_file: {}/null_store.count\n",
            temp);
    const std::string path = temp + "/smprotocol.yaml";
    std::ofstream(path) << text;
    return path;
}

// One JSON object on one line, for pipeline_bench.py.
class JsonLine {
   public:
    void number(std::string_view key, std::optional<double> value) { field(key, formatted(value)); }
    void numbers(std::string_view key, const std::vector<double>& values) {
        std::string list;
        for (const double value : values) list += (list.empty() ? "" : ", ") + formatted(value);
        field(key, "[" + list + "]");
    }
    void flag(std::string_view key, bool value) { field(key, value ? "true" : "false"); }
    void null(std::string_view key) { field(key, "null"); }
    void text(std::string_view key, std::string_view value) {
        std::string quoted = "\"";
        for (const char c : value) {
            if (c == '"' || c == '\\') quoted += '\\';
            quoted += c;
        }
        field(key, quoted + "\"");
    }
    std::string finish() const { return "{" + fields_ + "}"; }

   private:
    static std::string formatted(std::optional<double> value) {
        if (!value || !std::isfinite(*value)) return "null";
        if (*value == std::floor(*value) && std::fabs(*value) < 1e15)
            return fmt::format("{}", static_cast<int64_t>(*value));
        return fmt::format("{:.6g}", *value);
    }
    void field(std::string_view key, const std::string& value) {
        fields_ += fmt::format("{}\"{}\": {}", fields_.empty() ? "" : ", ", key, value);
    }
    std::string fields_;
};

// The temp dir (config, state_dir, database), removed at the end unless kept.
struct TempDir {
    std::string path;
    bool keep = false;
    explicit TempDir(bool keep_it) : keep(keep_it) {
        char name[] = "/tmp/smp-pipeline-XXXXXX";
        if (mkdtemp(name) == nullptr) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
        path = name;
    }
    ~TempDir() {
        if (keep) {
            std::fprintf(stderr, "  kept %s\n", path.c_str());
            return;
        }
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

int run(const Options& options) {
    const TempDir temp_dir(options.keep_tmp);
    const std::string& temp = temp_dir.path;
    const std::string config_path = write_config(options, temp, link_modules(temp));
    smp::Config config = smp::load_config(config_path, "");
    smp::setup_logging(config.log);
    auto runtime = smp::build_runtime(std::move(config), nullptr);
    // Nothing is served: the workers are simulated.
    smp::close_listeners(runtime->listeners);
    if (options.store == "none") {
        // The store the loader added, taken out as the collector would never
        // have had it: it then builds no batch, and releases the logs as soon
        // as its checkpoint is written.
        auto& modules = runtime->modules;
        for (auto it = modules.begin(); it != modules.end();) {
            if (SMP_MODULE_HOOK((*it)->api, store) == nullptr) {
                ++it;
                continue;
            }
            if ((*it)->api->exit_master != nullptr) (*it)->api->exit_master((*it)->instance);
            it = modules.erase(it);
        }
    }
    const std::string state_dir = runtime->config.state_dir;
    const int shards = options.collectors;
    std::vector<std::string> log_dirs;
    for (int shard = 0; shard < shards; ++shard) log_dirs.push_back(smp::record_log_dir(state_dir, shard));

    // The workers' logs, W in each shard, made before the collectors start:
    // each finds those of its shard at its start, as it finds the logs an
    // earlier run left. Numbers come from the first shard's counter, as the
    // master's do (Master::create_record_logs).
    std::vector<smp::RecordLogDirectory> directories;
    std::vector<std::vector<WriterLog>> logs(static_cast<size_t>(shards));  // by shard, then by worker
    for (int shard = 0; shard < shards; ++shard) {
        auto& directory = directories.emplace_back(log_dirs[static_cast<size_t>(shard)], log_dirs[0]);
        for (int i = 0; i < options.workers; ++i) {
            std::string error;
            auto created = directory.create(static_cast<uint64_t>(runtime->config.tracking.log_size),
                                            static_cast<uid_t>(-1), static_cast<gid_t>(-1), error);
            if (!created) throw std::runtime_error(error);
            if (!created->warning.empty()) spdlog::warn("{}", created->warning);
            auto for_writer = smp::MappedLog::map(created->fd, error);
            auto for_header = smp::MappedLog::map(created->fd, error);
            ::close(created->fd);
            if (!for_writer || !for_header) throw std::runtime_error("cannot map a record log: " + error);
            logs[static_cast<size_t>(shard)].push_back(
                {smp::RecordLogWriter(std::move(*for_writer)), std::move(*for_header)});
        }
    }

    std::fflush(stdout);
    spdlog::default_logger()->flush();
    Collectors collectors;
    for (int shard = 0; shard < shards; ++shard) {
        const pid_t pid = fork();
        if (pid < 0) {
            const int fork_error = errno;
            collectors.stop(kStopTimeout);
            throw std::runtime_error(std::string("fork: ") + std::strerror(fork_error));
        }
        if (pid == 0) become_collector(*runtime, shard, shards);
        collectors.add(pid);
    }
    const std::vector<pid_t> collector_pids = collectors.pids();
    const bool pinned = pin_to_cpu(0, kWriterCpu);
    if (!pinned) std::fprintf(stderr, "pipeline_bench: cannot pin the writer to CPU %d: not pinned\n", kWriterCpu);
    // The CPUs the collectors run on: what else ran there is reported.
    std::vector<int> collector_cpus;
    for (int shard = 0; shard < shards; ++shard) {
        const int cpu = collector_cpu(shard, shards);
        if (std::find(collector_cpus.begin(), collector_cpus.end(), cpu) == collector_cpus.end())
            collector_cpus.push_back(cpu);
    }
    const bool writer_shares_a_cpu =
        std::find(collector_cpus.begin(), collector_cpus.end(), kWriterCpu) != collector_cpus.end();
    const auto collector_cpus_busy_s = [&collector_cpus] {
        double busy_s = 0;
        for (const int cpu : collector_cpus) busy_s += cpu_busy_s(cpu);
        return busy_s;
    };
    const auto own_cpu_s = [] {
        rusage usage{};
        getrusage(RUSAGE_SELF, &usage);
        return rusage_cpu_s(usage);
    };

    // Ready when each has recovered (found its logs) and started its journal.
    const auto ready_deadline = Clock::now() + kReadyTimeout;
    while (!std::all_of(log_dirs.begin(), log_dirs.end(),
                        [](const std::string& dir) { return !smp::list_journals(dir).empty(); })) {
        if (!collectors.all_running()) {
            collectors.stop(kStopTimeout);
            throw std::runtime_error("a collector did not start (" + collectors.how_they_ended() + ")");
        }
        if (Clock::now() >= ready_deadline) {
            collectors.stop(kStopTimeout);
            throw std::runtime_error("a collector did not start its journal in time");
        }
        std::this_thread::sleep_for(kPollEvery);
    }
    pid_t perf = 0;
    if (!options.perf_data.empty()) {
        perf = start_perf(options, collector_pids);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));  // perf attaches
    }

    const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.timeout_s));
    std::vector<std::map<pid_t, uint64_t>> cpu_before;
    double children_before = 0;
    for (const pid_t pid : collector_pids) {
        cpu_before.push_back(thread_cpu_ns(pid));
        children_before += children_cpu_s(pid);
    }
    const double cpus_busy_before = collector_cpus_busy_s();
    const double writer_cpu_before = own_cpu_s();
    Traffic traffic(options.seed, runtime->node);
    WriterStats writer;
    AnonymousPeak memory(collector_pids);
    const auto first_append = Clock::now();
    uint64_t appended = 0;
    bool writer_gave_up = false;
    for (uint64_t session = 0; appended < options.records && !writer_gave_up; ++session) {
        const size_t slot = session % static_cast<size_t>(options.workers);
        for (const smp_record& record : traffic.next_session(static_cast<uint32_t>(slot + 1))) {
            if (appended == options.records) break;
            // The shard as a worker picks it (Worker::record).
            const size_t shard = shards == 1 ? 0 : smp::hash_of(smp::download_key(record)) % logs.size();
            if (!append_until_taken(logs[shard][slot], record, writer, memory, collectors, timeout)) {
                writer_gave_up = true;
                break;
            }
            if (++appended % 4096 == 0) memory.sample();
        }
    }
    const auto last_append = Clock::now();
    // As the master does when it has reaped a worker.
    for (auto& directory : directories) directory.end_all_left();

    uint64_t log_bytes = 0;
    std::vector<uint64_t> appended_by_shard(logs.size());
    // Shard, log number, records appended.
    std::vector<std::tuple<size_t, uint64_t, uint64_t>> expected;
    for (size_t shard = 0; shard < logs.size(); ++shard)
        for (const auto& log : logs[shard]) {
            log_bytes += log.view.header().written.load(std::memory_order_acquire);
            appended_by_shard[shard] += log.appended;
            expected.emplace_back(shard, log.view.header().number, log.appended);
        }

    // Until every collector has read every record of its shard, and the
    // store has stored them: sqlite's request rows (one database for all
    // the collectors), the null store's count; with no store, reading is
    // the end.
    std::vector<ReadProgress> progress;
    for (const auto& dir : log_dirs) progress.emplace_back(dir);
    StoredRows rows(state_dir + "/stats.db");
    const std::string count_file = temp + "/null_store.count";
    std::optional<Clock::time_point> read_at;
    std::optional<Clock::time_point> stored_at;
    uint64_t stored = 0;
    const auto give_up = last_append + timeout;
    Clock::time_point database_polled_at{};
    while (!writer_gave_up && !stored_at) {
        const auto now = Clock::now();
        if (!read_at) {
            for (auto& shard_progress : progress) shard_progress.poll();
            if (std::all_of(expected.begin(), expected.end(), [&](const auto& log) {
                    const auto& [shard, number, records] = log;
                    return progress[shard].read_to(number) >= records;
                }))
                read_at = now;
        }
        if (options.store == "sqlite") {
            if (now - database_polled_at >= kDatabasePollEvery) {
                database_polled_at = now;
                stored = rows.last_request().value_or(stored);
            }
        } else if (options.store == "null") {
            stored = read_null_store_totals(count_file)[0];
        } else if (read_at) {
            stored = options.records;
        }
        if (read_at && stored >= options.records) stored_at = now;
        memory.sample();
        if (stored_at || now >= give_up) break;
        if (!collectors.all_running()) break;
        std::this_thread::sleep_for(kPollEvery);
    }
    std::vector<std::map<pid_t, uint64_t>> cpu_after;
    double children_after = 0;
    for (const pid_t pid : collector_pids) {
        cpu_after.push_back(thread_cpu_ns(pid));
        children_after += children_cpu_s(pid);
    }
    const double cpus_busy_after = collector_cpus_busy_s();
    const double writer_cpu_after = own_cpu_s();
    // Their peak counts the pages of the logs they touched (a shared
    // mapping); their own memory is the anonymous part.
    const uint64_t rss_peak_kib = status_kib(collector_pids, "VmHWM");
    const uint64_t rss_anon_kib = status_kib(collector_pids, "RssAnon");
    std::error_code no_wal;
    const auto wal_bytes = std::filesystem::file_size(state_dir + "/stats.db-wal", no_wal);
    memory.note(rss_anon_kib);
    stop_perf(perf);

    // A collector deletes a log once it ended, was read to its end and the
    // stores have it: at its next committed checkpoint.
    std::optional<Clock::time_point> logs_gone_at;
    while (stored_at && collectors.all_running() && Clock::now() < *stored_at + kLogsGoneTimeout) {
        if (std::all_of(log_dirs.begin(), log_dirs.end(),
                        [](const std::string& dir) { return smp::list_record_logs(dir).empty(); })) {
            logs_gone_at = Clock::now();
            break;
        }
        std::this_thread::sleep_for(kPollEvery);
    }

    const auto stop_from = Clock::now();
    const bool died = !collectors.all_running();  // before they were asked to stop
    collectors.stop(kStopTimeout);
    const double stop_s = seconds_between(stop_from, Clock::now());
    double exit_cpu_s = 0;
    for (size_t shard = 0; shard < collectors.size(); ++shard)
        exit_cpu_s += rusage_cpu_s(collectors[shard].stop(Clock::now()).usage);

    // What the store holds once the collectors stopped: their last batches
    // hold the downloads still open, finished at the stop.
    std::optional<uint64_t> request_rows;
    std::optional<uint64_t> download_rows;     // sqlite: one per download
    std::optional<uint64_t> download_upserts;  // null store: one per download and batch it changed in
    if (options.store == "sqlite") {
        StoredRows final_rows(state_dir + "/stats.db");
        request_rows = final_rows.count("requests");
        download_rows = final_rows.count("downloads");
    } else if (options.store == "null") {
        const auto totals = read_null_store_totals(count_file);
        request_rows = totals[0];
        download_upserts = totals[1];
    }

    // Each collector's threads: its loop (the process's first thread) and
    // its storage thread(s).
    uint64_t loop_ns = 0;
    uint64_t storage_ns = 0;
    std::vector<double> collector_cpu_each_s;
    std::string storage_tids;
    for (size_t shard = 0; shard < collector_pids.size(); ++shard) {
        uint64_t its_ns = 0;
        for (const auto& [tid, ran_ns] : cpu_after[shard]) {
            auto before = cpu_before[shard].find(tid);
            const uint64_t ran_in_run_ns = ran_ns - (before == cpu_before[shard].end() ? 0 : before->second);
            (tid == collector_pids[shard] ? loop_ns : storage_ns) += ran_in_run_ns;
            its_ns += ran_in_run_ns;
            if (tid != collector_pids[shard]) storage_tids += fmt::format("{}{}", storage_tids.empty() ? "" : ",", tid);
        }
        collector_cpu_each_s.push_back(static_cast<double>(its_ns) / 1e9);
    }
    const double records = static_cast<double>(options.records);
    const double append_s = seconds_between(first_append, last_append);
    const double read_s = read_at ? seconds_between(first_append, *read_at) : NAN;
    const double stored_s = stored_at ? seconds_between(first_append, *stored_at) : NAN;
    const double collector_cpu_s = static_cast<double>(loop_ns + storage_ns) / 1e9;
    const double checkpoint_cpu_s = children_after - children_before;
    // What else ran on the collectors' CPUs meanwhile: other processes (and
    // interrupts), and not the writer when it shares one of them. Ticks of
    // 10 ms: a few hundredths either way.
    const double writer_cpu_s = writer_shares_a_cpu ? writer_cpu_after - writer_cpu_before : 0;
    const double others_s =
        std::max(0.0, cpus_busy_after - cpus_busy_before - collector_cpu_s - checkpoint_cpu_s - writer_cpu_s);
    std::string cpu_names;
    for (const int cpu : collector_cpus) cpu_names += fmt::format("{}{}", cpu_names.empty() ? "" : ",", cpu);

    std::string error;
    if (died)
        error = "a collector died before everything was stored (" + collectors.how_they_ended() + ")";
    else if (writer_gave_up)
        error = fmt::format("the writer found no room in a log for {} s; {} of {} records appended", options.timeout_s,
                            appended, options.records);
    else if (!stored_at)
        error = fmt::format("not everything was stored {} s after the last append ({} of {})", options.timeout_s,
                            stored, options.records);
    else if (request_rows && *request_rows != options.records)
        error = fmt::format("the store holds {} request rows for {} records", *request_rows, options.records);
    const std::optional<double> logs_gone_after_s =
        logs_gone_at ? std::optional(seconds_between(*stored_at, *logs_gone_at)) : std::nullopt;

    fmt::print(stderr,
               "{}: {} records into {} log(s) in {:.2f} s ({:.0f}/s, {:.1f} bytes each in the log; {} tries refused, "
               "{} records waited {:.2f} s for room)\n",
               options.store, appended, options.workers * shards, append_s, static_cast<double>(appended) / append_s,
               static_cast<double>(log_bytes) / static_cast<double>(appended), writer.refused_tries,
               writer.records_waited, writer.waited_s);
    if (shards > 1) {
        std::string split;
        for (size_t shard = 0; shard < appended_by_shard.size(); ++shard)
            split += fmt::format("{}{} ({} logs)", shard == 0 ? "" : ", ", appended_by_shard[shard], options.workers);
        fmt::print(stderr, "  {} collectors on CPUs {}{}: records by shard {}{}\n", shards, cpu_names,
                   options.store == "sqlite" ? ", all storing into one database" : "", split,
                   writer_shares_a_cpu
                       ? fmt::format("; the writer (CPU {}) shares its CPU with a collector", kWriterCpu)
                       : "");
    }
    fmt::print(stderr, "  read by the collector{} after {:.2f} s ({:.0f}/s), stored after {:.2f} s: {:.0f} records/s\n",
               shards > 1 ? "s" : "", read_s, records / read_s, stored_s, records / stored_s);
    fmt::print(stderr,
               "  collector CPU {:.2f} s = {:.2f} us/record (loop {:.2f}, storage thread {:.2f}; checkpoint writers "
               "{:.2f} s more): {:.0f} records/s per CPU second; other processes used {:.2f} s of CPU {}\n",
               collector_cpu_s, collector_cpu_s * 1e6 / records, static_cast<double>(loop_ns) / 1e3 / records,
               static_cast<double>(storage_ns) / 1e3 / records, checkpoint_cpu_s, records / collector_cpu_s, others_s,
               cpu_names);
    if (shards > 1) {
        std::string each;
        for (size_t shard = 0; shard < collector_cpu_each_s.size(); ++shard)
            each +=
                fmt::format("{}collector {} {:.2f} s", shard == 0 ? "" : ", ", shard + 1, collector_cpu_each_s[shard]);
        fmt::print(stderr, "  CPU by collector: {}\n", each);
    }
    fmt::print(stderr,
               "  RSS peak {} MiB (with the log pages mapped); anonymous: peak {} MiB, {} MiB when all was stored{}\n",
               rss_peak_kib / 1024, memory.peak_kib() / 1024, rss_anon_kib / 1024,
               shards > 1 ? " (the collectors together)" : "");
    fmt::print(stderr, "  logs deleted {}; stopped in {:.2f} s ({})\n",
               logs_gone_after_s ? fmt::format("{:.2f} s after all was stored", *logs_gone_after_s) : "not seen",
               stop_s, collectors.how_they_ended());
    if (download_rows)
        fmt::print(stderr, "  store: {} request rows, {} download rows; its WAL was {} MiB when all was stored\n",
                   *request_rows, *download_rows, no_wal ? 0 : wal_bytes >> 20);
    if (download_upserts)
        fmt::print(stderr, "  store: {} request records, {} download rows handed over ({:.2f} a record)\n",
                   *request_rows, *download_upserts, static_cast<double>(*download_upserts) / records);
    if (!error.empty()) fmt::print(stderr, "  ERROR: {}\n", error);

    std::vector<double> collector_pid_numbers(collector_pids.begin(), collector_pids.end());
    std::vector<double> appended_by_shard_numbers(appended_by_shard.begin(), appended_by_shard.end());
    std::vector<double> collector_cpu_numbers(collector_cpus.begin(), collector_cpus.end());
    JsonLine json;
    json.text("store", options.store);
    json.number("records", records);
    json.number("workers", options.workers);
    json.number("collectors", shards);
    json.numbers("collector_cpus", collector_cpu_numbers);
    json.flag("writer_shares_a_cpu", writer_shares_a_cpu);
    json.number("log_size", static_cast<double>(runtime->config.tracking.log_size));
    json.flag("pinned", pinned);
    json.number("appended", static_cast<double>(appended));
    json.numbers("appended_by_shard", appended_by_shard_numbers);
    json.number("log_bytes_per_record", static_cast<double>(log_bytes) / static_cast<double>(appended));
    json.number("append_s", append_s);
    json.number("append_rate", static_cast<double>(appended) / append_s);
    json.number("refused_tries", static_cast<double>(writer.refused_tries));
    json.number("records_waited", static_cast<double>(writer.records_waited));
    json.number("waited_s", writer.waited_s);
    json.number("read_s", read_s);
    json.number("read_rate", records / read_s);
    json.number("stored_s", stored_s);
    json.number("rate", records / stored_s);
    json.number("collector_cpu_s", collector_cpu_s);
    json.numbers("collector_cpu_each_s", collector_cpu_each_s);
    json.number("cpu_us_per_record", collector_cpu_s * 1e6 / records);
    json.number("cpu_bound_rate", records / collector_cpu_s);
    json.number("collector_cpus_others_s", others_s);
    json.number("writer_cpu_s", writer_cpu_after - writer_cpu_before);
    json.number("loop_us_per_record", static_cast<double>(loop_ns) / 1e3 / records);
    json.number("storage_us_per_record", static_cast<double>(storage_ns) / 1e3 / records);
    json.number("checkpoint_cpu_s", checkpoint_cpu_s);
    json.number("rss_peak_kib", static_cast<double>(rss_peak_kib));
    json.number("rss_anon_kib", static_cast<double>(rss_anon_kib));
    json.number("rss_anon_peak_kib", static_cast<double>(memory.peak_kib()));
    json.number("logs_gone_after_s", logs_gone_after_s);
    json.number("stop_s", stop_s);
    json.text("stop", collectors.how_they_ended());
    json.number("exit_cpu_s", exit_cpu_s);
    json.number("request_rows", request_rows ? std::optional(static_cast<double>(*request_rows)) : std::nullopt);
    json.number("download_rows", download_rows ? std::optional(static_cast<double>(*download_rows)) : std::nullopt);
    json.number("download_upserts",
                download_upserts ? std::optional(static_cast<double>(*download_upserts)) : std::nullopt);
    json.number("wal_bytes", no_wal ? std::nullopt : std::optional(static_cast<double>(wal_bytes)));
    json.numbers("collector_pids", collector_pid_numbers);
    json.text("storage_tids", storage_tids);
    if (error.empty())
        json.null("error");
    else
        json.text("error", error);
    std::printf("PIPELINE_BENCH %s\n", json.finish().c_str());
    std::fflush(stdout);

    return error.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv);
    try {
        return run(options);
    } catch (const smp::ConfigErrors& errors) {
        for (const auto& error : errors.errors()) std::fprintf(stderr, "pipeline_bench: %s\n", error.c_str());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pipeline_bench: %s\n", e.what());
        return 2;
    }
}
