#include "runtime.hpp"

#include <unistd.h>

#include <array>

namespace smp {
namespace {

std::string host_name() {
    std::array<char, 256> name{};
    gethostname(name.data(), name.size() - 1);
    return name.data();
}

}  // namespace

Runtime::~Runtime() {
    close_listeners(listeners);
    unload_modules(modules);
}

std::unique_ptr<Runtime> build_runtime(Config config, const Runtime* previous) {
    auto runtime = std::make_unique<Runtime>();
    // The modules keep pointers into the config's entries: it moves in
    // first and stays put.
    runtime->config = std::move(config);
    const Config& settled = runtime->config;
    runtime->user = resolve_user(settled);
    runtime->modules = load_modules(settled, core_api());
    for (const auto& module : runtime->modules)
        spdlog::debug("Module '{}' loaded from {}", module->entry->module, module->object->path());
    if (!settled.log.access_log.empty())
        runtime->access_log.open(settled.log.access_log, static_cast<size_t>(settled.log.access_log_buffer));
    for (const auto& network : settled.trusted_proxies) runtime->trusted_proxies.add(network);
    runtime->node = settled.node.empty() ? host_name() : settled.node;
    // The default store's database was just created by root: the collector,
    // running as the user, must be able to write it and its spool.
    if (runtime->user && settled.tracking.enabled) give_state_dir(settled.state_dir, *runtime->user);
    runtime->listeners = bind_listeners(settled, runtime->modules, previous ? &previous->listeners : nullptr);
    return runtime;
}

}  // namespace smp
