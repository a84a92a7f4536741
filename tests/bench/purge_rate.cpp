// purge_rate: how long one call of the sqlite store's purge hook
// (tracking.retention) holds the store, on a database of a million rows:
// the figures behind the core's batch of rows per call (docs/tracking.md,
// "Retention"). Not installed; run it from the build directory:
//
//     build-r/tests/bench/purge_rate [--requests 500000] [--rows 2000] [--db PATH] [--keep]
//
// --requests: requests stored first, each with its own finished download
//   (so twice as many rows), all older than the cut; --rows: max_rows of a
//   call. Then purges them all, a call at a time, and prints the wall time
//   of the calls: min, median, max, and the rows a call deleted; then the
//   same for the calls that deleted requests only and for those that
//   deleted downloads (and added them to the per-day totals).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "sqlite_harness.hpp"

int main(int argc, char** argv) {
    size_t requests = 500'000;
    uint32_t rows = 2000;
    std::string db = "/tmp/purge_rate-" + std::to_string(::getpid()) + ".db";
    bool keep = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--keep") {
            keep = true;
        } else if (i + 1 < argc && arg == "--requests") {
            requests = std::strtoull(argv[++i], nullptr, 10);
        } else if (i + 1 < argc && arg == "--rows") {
            rows = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
        } else if (i + 1 < argc && arg == "--db") {
            db = argv[++i];
        } else {
            std::fprintf(stderr, "usage: purge_rate [--requests N] [--rows N] [--db PATH] [--keep]\n");
            return 2;
        }
    }
    using Clock = std::chrono::steady_clock;
    smp_sqlite_harness::LoadedStore store(SMP_SQLITE_MODULE, db);
    constexpr size_t kBatch = 50'000;
    for (size_t first = 0; first < requests; first += kBatch) {
        smp_sqlite_harness::TrafficBatch batch;
        smp_sqlite_harness::add_traffic(batch, first, std::min(kBatch, requests - first));
        for (smp_download& download : batch.downloads) download.finished = 1;
        if (store.store(batch.view()) != SMP_OK) return std::fprintf(stderr, "store failed\n"), 1;
    }
    std::vector<double> call_ms;
    uint64_t total = 0;
    uint32_t purged = 0;
    do {
        const auto start = Clock::now();
        if (store.purge(INT64_MAX, rows, purged) != SMP_OK) return std::fprintf(stderr, "purge failed\n"), 1;
        call_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        total += purged;
    } while (purged == rows);
    std::vector<double> sorted = call_ms;
    std::sort(sorted.begin(), sorted.end());
    std::printf("%zu requests + %zu downloads, max_rows %u: %zu calls, %llu rows purged\n", requests, requests, rows,
                call_ms.size(), static_cast<unsigned long long>(total));
    std::printf("ms per call: min %.2f  median %.2f  max %.2f  (first %.2f)\n", sorted.front(),
                sorted[sorted.size() / 2], sorted.back(), call_ms.front());
    // The requests go first: the calls before that many rows deleted
    // requests only; the others delete downloads, rolled up into daily.
    const auto line = [](const char* what, std::vector<double> part) {
        if (part.empty()) return;
        std::sort(part.begin(), part.end());
        std::printf("  %s: %zu calls, ms min %.2f  median %.2f  max %.2f\n", what, part.size(), part.front(),
                    part[part.size() / 2], part.back());
    };
    const size_t request_calls = std::min(call_ms.size(), requests / std::max<uint32_t>(rows, 1));
    line("requests only", {call_ms.begin(), call_ms.begin() + static_cast<std::ptrdiff_t>(request_calls)});
    line("downloads (and daily)", {call_ms.begin() + static_cast<std::ptrdiff_t>(request_calls), call_ms.end()});
    if (!keep) {
        for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix);
    }
    return 0;
}
