// store_rate: request records stored per second by the sqlite store, called
// as the collector's storage thread calls it, on batches shaped like small-file
// traffic (plugins/sqlite/sqlite_harness.hpp). Not installed; run it from the
// build directory:
//
//     build-s/tests/bench/store_rate [--records 50000] [--batches 8] [--merge 1]
//                                    [--downloads 1] [--db PATH] [--keep] [--module PATH]
//
// --records: requests per batch (a second of traffic); --downloads: download
//   rows per request: 1 (the default): each request is the whole of its own
//   download, handed over open; 2: each batch also finishes the downloads of
//   the batch before it, as the collector does once their idle window is
//   over; 0: requests only;
// --merge: batches per store call (the collector merges up to 8 when the
//   store falls behind); --db: the database (default: a new file in /tmp,
//   removed at the end unless --keep); --module: another build of sqlite.so
//   (default: this build's), to compare two.
//
// Prints, over all store calls: wall time and the storing thread's CPU time,
// request records per second, and microseconds per row (requests plus
// downloads) and per request. Only the store calls are timed, not the making
// of the batches.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "sqlite_harness.hpp"

namespace {

struct Options {
    size_t records = 50'000;
    size_t batches = 8;
    size_t merge = 1;
    size_t downloads = 1;
    std::string db;
    bool keep = false;
    std::string module = SMP_SQLITE_MODULE;
};

[[noreturn]] void usage(const char* error) {
    std::fprintf(
        stderr,
        "store_rate: %s\nusage: store_rate [--records N] [--batches N] [--merge N] [--downloads 0|1|2] [--db PATH] "
        "[--keep]\n",
        error);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto number = [&]() -> size_t {
            if (i + 1 >= argc) usage(("missing value of " + arg).c_str());
            const long long value = std::atoll(argv[++i]);
            if (value <= 0) usage((arg + " wants a positive number").c_str());
            return static_cast<size_t>(value);
        };
        if (arg == "--records")
            options.records = number();
        else if (arg == "--batches")
            options.batches = number();
        else if (arg == "--merge")
            options.merge = number();
        else if (arg == "--downloads" && i + 1 < argc)
            options.downloads = static_cast<size_t>(std::atoi(argv[++i]));
        else if (arg == "--keep")
            options.keep = true;
        else if (arg == "--module" && i + 1 < argc)
            options.module = argv[++i];
        else if (arg == "--db" && i + 1 < argc)
            options.db = argv[++i];
        else
            usage(("unknown argument " + arg).c_str());
    }
    return options;
}

// This thread's CPU time so far, in user space and in the kernel (SQLite's
// writes to its WAL and database files).
struct CpuTime {
    double user = 0;
    double system = 0;
};

CpuTime thread_cpu_time() {
    rusage usage{};
    getrusage(RUSAGE_THREAD, &usage);
    const auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
    return {seconds(usage.ru_utime), seconds(usage.ru_stime)};
}

void remove_database(const std::string& path) {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
}

}  // namespace

int main(int argc, char** argv) {
    Options options = parse(argc, argv);
    if (options.downloads > 2) usage("--downloads is 0, 1 or 2");
    const bool temporary = options.db.empty();
    if (temporary) options.db = "/tmp/smp-store-rate-" + std::to_string(::getpid()) + ".db";
    remove_database(options.db);
    try {
        smp_sqlite_harness::LoadedStore store(options.module, options.db);
        double wall = 0;
        CpuTime cpu;
        size_t requests = 0;
        size_t rows = 0;
        uint64_t next = 0;
        uint64_t sequence = 0;
        for (size_t call = 0; call * options.merge < options.batches; ++call) {
            smp_sqlite_harness::TrafficBatch batch;
            for (size_t merged = 0; merged < options.merge && call * options.merge + merged < options.batches;
                 ++merged) {
                smp_sqlite_harness::add_traffic(batch, next, options.records, options.downloads);
                next += options.records;
                ++sequence;
            }
            batch.batch.origin = 1;
            batch.batch.sequence = sequence;
            const smp_batch& view = batch.view();
            const auto started = std::chrono::steady_clock::now();
            const CpuTime cpu_started = thread_cpu_time();
            std::string error;
            if (store.store(view, &error) != SMP_OK) {
                std::fprintf(stderr, "store_rate: store failed: %s\n", error.c_str());
                return 1;
            }
            const CpuTime cpu_ended = thread_cpu_time();
            cpu.user += cpu_ended.user - cpu_started.user;
            cpu.system += cpu_ended.system - cpu_started.system;
            wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            requests += view.record_count;
            rows += view.record_count + view.download_count;
        }
        const double total = cpu.user + cpu.system;
        std::printf(
            "%zu requests, %zu rows (%zu request(s) per batch, %zu download row(s) each, %zu batch(es) per call)\n"
            "wall %.3f s: %.0f requests/s, %.3f us/row, %.3f us/request\n"
            "cpu  %.3f s: %.0f requests/s, %.3f us/row, %.3f us/request (user %.3f s, system %.3f s)\n",
            requests, rows, options.records, options.downloads, options.merge, wall,
            static_cast<double>(requests) / wall, wall * 1e6 / static_cast<double>(rows),
            wall * 1e6 / static_cast<double>(requests), total, static_cast<double>(requests) / total,
            total * 1e6 / static_cast<double>(rows), total * 1e6 / static_cast<double>(requests), cpu.user, cpu.system);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "store_rate: %s\n", e.what());
        return 1;
    }
    if (temporary && !options.keep) remove_database(options.db);
    return 0;
}
