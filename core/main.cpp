// smprotocol: the download server's command line.
#include <getopt.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "master.hpp"
#include "sign_command.hpp"
#include "stats_command.hpp"

namespace {

constexpr const char* kUsage =
    "usage: smprotocol [--config PATH] [--test-config|-t] [--version]\n"
    "       smprotocol stats [--config PATH] [--since T] [--until T] [--file PATH] [--bucket B] [--json|--csv] REPORT\n"
    "       smprotocol sign [--config PATH] [--ttl 1h] [--ip ADDRESS] PATH\n"
    "  -c, --config PATH    configuration file (default " SMP_DEFAULT_CONFIG
    ")\n"
    "  -t, --test-config    check the configuration and load every module, then exit\n"
    "  -v, --version        print the version and exit\n";

struct Options {
    std::string config = SMP_DEFAULT_CONFIG;
    bool test_config = false;
};

// Exits on --version, --help or a usage error.
Options parse_options(int argc, char** argv) {
    static const option long_options[] = {{"config", required_argument, nullptr, 'c'},
                                          {"test-config", no_argument, nullptr, 't'},
                                          {"version", no_argument, nullptr, 'v'},
                                          {"help", no_argument, nullptr, 'h'},
                                          {nullptr, 0, nullptr, 0}};
    Options options;
    int option = 0;
    while ((option = getopt_long(argc, argv, "c:tvh", long_options, nullptr)) != -1) {
        switch (option) {
            case 'c': options.config = optarg; break;
            case 't': options.test_config = true; break;
            case 'v': std::printf("smprotocol %s\n", SMP_VERSION); std::exit(0);
            case 'h': std::fputs(kUsage, stdout); std::exit(0);
            default: std::fputs(kUsage, stderr); std::exit(2);
        }
    }
    if (optind < argc) {
        std::fprintf(stderr, "smprotocol: unexpected argument '%s'\n%s", argv[optind], kUsage);
        std::exit(2);
    }
    return options;
}

// Each idle keep-alive connection and each cached open file holds a
// descriptor: take what the hard limit allows, as nginx's worker_rlimit_nofile.
void raise_file_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string_view(argv[1]) == "stats") return smp::run_stats(argc - 1, argv + 1);
    if (argc > 1 && std::string_view(argv[1]) == "sign") return smp::run_sign(argc - 1, argv + 1);
    const Options options = parse_options(argc, argv);
    // A client that goes away makes sendfile(2) fail with EPIPE; without this
    // it would kill the worker instead.
    signal(SIGPIPE, SIG_IGN);
    const char* environment_variable = std::getenv("APPLICATION_ENV");
    const std::string environment = environment_variable ? environment_variable : "";
    std::unique_ptr<smp::Runtime> runtime;
    try {
        smp::Config config = smp::load_config(options.config, environment);
        smp::setup_logging(config.log);
        if (!options.test_config) smp::print_banner();
        if (!config.environment.empty())
            spdlog::info("Environment '{}' applied from APPLICATION_ENV", config.environment);
        else if (!environment.empty())
            spdlog::info("APPLICATION_ENV={}: no such entry under environments, using the base settings", environment);
        raise_file_limit();  // before the modules read it, in a check as at start
        if (options.test_config) {
            smp::resolve_user(config);
            auto modules = smp::load_modules(config, smp::core_api());
            smp::unload_modules(modules);
            std::printf("configuration OK: %s\n", options.config.c_str());
            return 0;
        }
        runtime = smp::build_runtime(std::move(config), nullptr);
        if (runtime->user) smp::give_log_files(runtime->config.log, *runtime->user);
    } catch (const smp::ConfigErrors& errors) {
        for (const auto& error : errors.errors()) std::fprintf(stderr, "smprotocol: %s\n", error.c_str());
        std::fprintf(stderr, "smprotocol: configuration has %zu error(s); not starting\n", errors.errors().size());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "smprotocol: %s; not starting\n", e.what());
        return 1;
    }
    try {
        smp::Master master(std::move(runtime), options.config, environment);
        return master.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "smprotocol: %s\n", e.what());
        return 1;
    }
}
