#include "stats_command.hpp"

#include <getopt.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "loader.hpp"
#include "log.hpp"
#include "record_log.hpp"
#include "report_format.hpp"
#include "runtime.hpp"

namespace smp {
namespace {

constexpr const char* kUsage =
    "usage: smprotocol stats [--config PATH] [--since T] [--until T] [--file PATH] [--bucket B] [--include-bots] "
    "[--json | --csv] REPORT\n"
    "  REPORT: summary, files, countries, reasons, downloads, tls, timeseries, in_progress, clients, daily\n"
    "  T: 2026-11-24, 2026-11-24T10:30:00 (UTC), or a time ago: 45s, 30m, 2h, 7d\n"
    "  B: minute, hour (the default) or day: the rows of timeseries\n"
    "  --include-bots: count the clients of class bot too (the reports count people by default)\n";

}  // namespace

int run_stats(int argc, char** argv) {
    static const option long_options[] = {
        {"config", required_argument, nullptr, 'c'}, {"since", required_argument, nullptr, 's'},
        {"until", required_argument, nullptr, 'u'},  {"file", required_argument, nullptr, 'f'},
        {"bucket", required_argument, nullptr, 'b'}, {"include-bots", no_argument, nullptr, 'B'},
        {"json", no_argument, nullptr, 'j'},         {"csv", no_argument, nullptr, 'v'},
        {"help", no_argument, nullptr, 'h'},         {nullptr, 0, nullptr, 0}};
    using namespace std::chrono;
    const int64_t now = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
    std::string config_path = SMP_DEFAULT_CONFIG;
    std::string file;
    std::optional<std::string> bucket;
    bool json = false;
    bool csv = false;
    smp_query query{};
    query.size = sizeof query;
    optind = 1;
    int option = 0;
    while ((option = getopt_long(argc, argv, "c:s:u:f:b:jvh", long_options, nullptr)) != -1) {
        switch (option) {
            case 'c': config_path = optarg; break;
            case 'f': file = optarg; break;
            case 'b': bucket = optarg; break;
            case 'B': query.include_bots = 1; break;
            case 'j': json = true; break;
            case 'v': csv = true; break;
            case 'h': std::fputs(kUsage, stdout); return 0;
            case 's':
            case 'u': {
                const auto at = smp_report::parse_time(optarg, now);
                if (!at) {
                    std::fprintf(stderr, "smprotocol stats: --%s: '%s' is not a time\n%s",
                                 option == 's' ? "since" : "until", optarg, kUsage);
                    return 2;
                }
                (option == 's' ? query.since_us : query.until_us) = *at;
                break;
            }
            default: std::fputs(kUsage, stderr); return 2;
        }
    }
    if (optind + 1 != argc) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    const std::string report = argv[optind];
    const auto usage_error = [](const std::string& message) {
        std::fprintf(stderr, "smprotocol stats: %s\n%s", message.c_str(), kUsage);
        return 2;
    };
    if (json && csv) return usage_error("--json and --csv: one or the other");
    if (bucket && report != "timeseries") return usage_error("--bucket: only the timeseries report has buckets");
    if (bucket && !smp_report::bucket_width_us(bucket->c_str()))
        return usage_error("--bucket: '" + *bucket + "' is not minute, hour or day");
    query.report = report.c_str();
    query.bucket = bucket ? bucket->c_str() : nullptr;
    // Stored paths are relative to the root, as the records carry them.
    while (file.starts_with('/')) file.erase(0, 1);
    query.path = file.empty() ? nullptr : file.c_str();

    Runtime runtime;
    try {
        const char* environment = std::getenv("APPLICATION_ENV");
        runtime.config = load_config(config_path, environment ? environment : "");
        LogConfig quiet;
        quiet.level = LogLevel::warn;
        setup_logging(quiet);
        runtime.modules = load_modules(runtime.config, core_api());
    } catch (const std::exception& failure) {
        return print_config_failure(failure);
    }
    int code = 1;
    const auto store = std::find_if(runtime.modules.begin(), runtime.modules.end(),
                                    [](const auto& m) { return SMP_MODULE_HOOK(m->api, query) != nullptr; });
    if (store == runtime.modules.end()) {
        std::fprintf(stderr, "smprotocol stats: %s names no storage plugin that answers reports (e.g. sqlite)\n",
                     config_path.c_str());
    } else {
        const ModuleInstance& module = **store;
        smp_table* table = nullptr;
        std::array<char, 512> error{};
        if (SMP_MODULE_HOOK(module.api, query)(module.instance, &query, &table, error.data(), error.size()) == SMP_OK) {
            const std::string text = json  ? smp_report::table_json(query.report, *table)
                                     : csv ? smp_report::table_csv(*table)
                                           : smp_report::table_text(*table);
            std::fputs(text.c_str(), stdout);
            // Not in the store: what the workers could not hand over is
            // counted in their logs (docs/tracking.md).
            uint64_t dropped = 0;
            for (const auto& dir : record_log_dirs(runtime.config.state_dir)) dropped += dropped_records(dir);
            if (dropped > 0 && !json && !csv)
                std::printf("records dropped (tracking log full): %llu\n", static_cast<unsigned long long>(dropped));
            SMP_MODULE_HOOK(module.api, free_table)(module.instance, table);
            code = 0;
        } else {
            std::fprintf(stderr, "smprotocol stats: %s: %s\n", module.entry->module.c_str(), error.data());
        }
    }
    unload_modules(runtime.modules);
    return code;
}

}  // namespace smp
