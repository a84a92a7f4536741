#include "stats_command.hpp"

#include <getopt.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "loader.hpp"
#include "log.hpp"
#include "record_log.hpp"
#include "runtime.hpp"
#include "units.hpp"

namespace smp {
namespace {

constexpr const char* kUsage =
    "usage: smprotocol stats [--config PATH] [--since T] [--until T] [--file PATH] [--json] REPORT\n"
    "  REPORT: summary, files, countries, reasons, downloads, tls\n"
    "  T: 2026-11-24, 2026-11-24T10:30:00 (UTC), or a time ago: 30m, 2h, 7d\n";

void append_json_string(std::string& out, const char* text) {
    out += '"';
    for (const char* p = text; *p; ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
            out += escaped;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

}  // namespace

std::optional<int64_t> parse_time(std::string_view text, int64_t now_us) {
    if (auto ago = parse_duration(text); ago && !text.empty() && text.back() >= 'a') return now_us - *ago * 1000;
    struct tm fields {};
    const std::string copy(text);
    for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"}) {
        fields = {};
        const char* end = strptime(copy.c_str(), format, &fields);
        if (end != nullptr && (*end == '\0' || (*end == 'Z' && end[1] == '\0')))
            return static_cast<int64_t>(timegm(&fields)) * 1'000'000;
    }
    return std::nullopt;
}

std::string table_json(const char* report, const smp_table& table) {
    std::string out = "{\"report\": ";
    append_json_string(out, report);
    out += ", \"rows\": [";
    for (size_t row = 0; row < table.row_count; ++row) {
        out += row == 0 ? "\n  {" : ",\n  {";
        for (size_t column = 0; column < table.column_count; ++column) {
            if (column > 0) out += ", ";
            append_json_string(out, table.columns[column]);
            out += ": ";
            const char* cell = table.cells[row * table.column_count + column];
            if (cell == nullptr)
                out += "null";
            else if (table.numeric[column])
                out += cell;
            else
                append_json_string(out, cell);
        }
        out += '}';
    }
    out += table.row_count > 0 ? "\n]}\n" : "]}\n";
    return out;
}

std::string table_text(const smp_table& table) {
    std::vector<size_t> widths(table.column_count);
    for (size_t column = 0; column < table.column_count; ++column) {
        widths[column] = std::strlen(table.columns[column]);
        for (size_t row = 0; row < table.row_count; ++row) {
            const char* cell = table.cells[row * table.column_count + column];
            widths[column] = std::max(widths[column], std::strlen(cell ? cell : "-"));
        }
    }
    std::string out;
    auto line = [&](auto cell_of) {
        for (size_t column = 0; column < table.column_count; ++column) {
            const std::string text = cell_of(column);
            const std::string pad(widths[column] - text.size(), ' ');
            out += table.numeric[column] ? pad + text : text + pad;
            out += column + 1 < table.column_count ? "  " : "\n";
        }
    };
    line([&](size_t column) { return std::string(table.columns[column]); });
    for (size_t row = 0; row < table.row_count; ++row)
        line([&](size_t column) {
            const char* cell = table.cells[row * table.column_count + column];
            return std::string(cell ? cell : "-");
        });
    if (table.row_count == 0) out += "(nothing recorded in this period)\n";
    return out;
}

int run_stats(int argc, char** argv) {
    static const option long_options[] = {{"config", required_argument, nullptr, 'c'},
                                          {"since", required_argument, nullptr, 's'},
                                          {"until", required_argument, nullptr, 'u'},
                                          {"file", required_argument, nullptr, 'f'},
                                          {"json", no_argument, nullptr, 'j'},
                                          {"help", no_argument, nullptr, 'h'},
                                          {nullptr, 0, nullptr, 0}};
    using namespace std::chrono;
    const int64_t now = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
    std::string config_path = SMP_DEFAULT_CONFIG;
    std::string file;
    bool json = false;
    smp_query query{};
    query.size = sizeof query;
    optind = 1;
    int option = 0;
    while ((option = getopt_long(argc, argv, "c:s:u:f:jh", long_options, nullptr)) != -1) {
        switch (option) {
            case 'c': config_path = optarg; break;
            case 'f': file = optarg; break;
            case 'j': json = true; break;
            case 'h': std::fputs(kUsage, stdout); return 0;
            case 's':
            case 'u': {
                const auto at = parse_time(optarg, now);
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
    query.report = report.c_str();
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
    } catch (const ConfigErrors& errors) {
        for (const auto& error : errors.errors()) std::fprintf(stderr, "smprotocol: %s\n", error.c_str());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "smprotocol: %s\n", e.what());
        return 1;
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
            const std::string text = json ? table_json(query.report, *table) : table_text(*table);
            std::fputs(text.c_str(), stdout);
            // Not in the store: what the workers could not hand over is
            // counted in their logs (docs/tracking.md).
            uint64_t dropped = 0;
            for (const auto& dir : record_log_dirs(runtime.config.state_dir)) dropped += dropped_records(dir);
            if (dropped > 0 && !json)
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
