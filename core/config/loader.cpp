#include "loader.hpp"

#include <spdlog/spdlog.h>

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <filesystem>
#include <map>

namespace smp {
namespace {

const char* kind_name(smp_module_kind kind) { return kind == SMP_MODULE_PROTOCOL ? "protocol" : "plugin"; }

std::string uv_version_text(uint32_t hex) {
    return std::to_string(hex >> 16) + "." + std::to_string((hex >> 8) & 0xff) + "." + std::to_string(hex & 0xff);
}

std::string executable_dir() {
    std::array<char, PATH_MAX> buffer{};
    const ssize_t length = readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
    if (length <= 0) return {};
    std::string path(buffer.data(), static_cast<size_t>(length));
    return path.substr(0, path.rfind('/'));
}

bool is_readable(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

// A module's init error that starts with one of its keys ("root: cannot
// open...", "tls.certificates[1].key: ...") is reported at that key's line.
void report_init_error(const ModuleInstance& module, std::string_view message, ErrorList& errors) {
    if (message.empty()) message = "init failed";
    const ModuleEntry& entry = *module.entry;
    if (const auto colon = message.find(": "); colon != std::string_view::npos) {
        const auto name = message.substr(0, colon);
        if (const auto line = key_line(entry, *module.api, name)) {
            errors.add_line(*line, entry.key + "." + std::string(name), std::string(message.substr(colon + 2)));
            return;
        }
    }
    errors.add(entry.node, entry.key, "module '" + entry.module + "': " + std::string(message));
}

// The module whose init_master runs, for config_warning.
const ModuleInstance* initializing = nullptr;
const ErrorList* initializing_file = nullptr;

}  // namespace

void config_warning(const char* message) {
    const std::string_view text = message != nullptr ? message : "";
    if (initializing == nullptr) {
        spdlog::warn("{}", text);
        return;
    }
    const ModuleEntry& entry = *initializing->entry;
    if (const auto colon = text.find(": "); colon != std::string_view::npos) {
        const auto name = text.substr(0, colon);
        if (const auto line = key_line(entry, *initializing->api, name)) {
            spdlog::warn("{}:{}: {}.{}: {}", initializing_file->file(), *line, entry.key, name, text.substr(colon + 2));
            return;
        }
    }
    spdlog::warn("{}:{}: {}: module '{}': {}", initializing_file->file(), entry.line, entry.key, entry.module, text);
}

std::string check_module(const smp_module* module, std::string_view name, smp_module_kind kind) {
    const std::string who = "module '" + std::string(name) + "'";
    if (module == nullptr) return who + ": the entry symbol returned no module";
    if (module->size < SMP_MODULE_MIN_SIZE)
        return who + ": module struct of " + std::to_string(module->size) + " bytes is smaller than the " +
               std::to_string(SMP_MODULE_MIN_SIZE) + " of ABI 1.0";
    if (module->abi_major != SMP_ABI_MAJOR)
        return who + ": built for ABI major version " + std::to_string(module->abi_major) +
               ", this server speaks ABI " + std::to_string(SMP_ABI_MAJOR);
    // A newer minor may rely on what this core lacks (a core call, a field
    // it fills): refused rather than half run.
    if (module->abi_minor > SMP_ABI_MINOR)
        return who + ": built for ABI " + std::to_string(SMP_ABI_MAJOR) + "." + std::to_string(module->abi_minor) +
               ", this server has ABI " + std::to_string(SMP_ABI_MAJOR) + "." + std::to_string(SMP_ABI_MINOR);
    // The module drives the core's uv_loop_t with the libuv running here,
    // which serves what was built against its major and an older or equal
    // minor. A module before ABI 1.7 does not say: not checked.
    if (SMP_HAS(module, uv_version)) {
        const uint32_t running = uv_version();
        if (module->uv_version == 0)
            return who + ": does not say which libuv it was built against (uv_version is 0: set it with " +
                   "SMP_MODULE_INIT or smp_module_stamp)";
        if (module->uv_version >> 16 != running >> 16 || (module->uv_version & 0xff00) > (running & 0xff00))
            return who + ": built against libuv " + uv_version_text(module->uv_version) + ", this server runs libuv " +
                   uv_version_text(running) + " (a module needs the same major version and no newer minor)";
    }
    if (SMP_HAS(module, config_key_size) && module->config_key_size != 0 &&
        module->config_key_size < sizeof(smp_config_key))
        return who + ": config_key_size " + std::to_string(module->config_key_size) + " is smaller than the " +
               std::to_string(sizeof(smp_config_key)) + " bytes of a config key";
    if (module->name == nullptr || name != module->name)
        return who + ": the module calls itself '" + std::string(module->name ? module->name : "") + "'";
    if (module->kind != kind)
        return who + ": is a " + (module->kind == SMP_MODULE_PROTOCOL ? "protocol" : "plugin") +
               " module, configured as a " + kind_name(kind);
    if (module->config_key_count > 0 && module->config_keys == nullptr)
        return who + ": declares config keys but no table";
    if (auto problem = check_key_names(*module); !problem.empty()) return who + ": " + problem;
    if (module->init_master == nullptr) return who + ": required hook init_master is missing";
    if (kind == SMP_MODULE_PROTOCOL) {
        if (module->init_worker == nullptr) return who + ": required hook init_worker is missing";
        if (module->accept == nullptr) return who + ": required hook accept is missing";
        if (module->shutdown == nullptr) return who + ": required hook shutdown is missing";
    } else if (module->on_connection == nullptr && module->on_transfer == nullptr && module->on_close == nullptr &&
               module->on_disconnect == nullptr && SMP_MODULE_HOOK(module, store) == nullptr &&
               SMP_MODULE_HOOK(module, counter_acquire) == nullptr &&
               SMP_MODULE_HOOK(module, counter_acquire_async) == nullptr &&
               SMP_MODULE_HOOK(module, cache_get) == nullptr && SMP_MODULE_HOOK(module, cache_get_async) == nullptr) {
        return who +
               ": a plugin needs at least one of on_connection, on_transfer, on_close, on_disconnect, store, "
               "counter_acquire, cache_get";
    }
    // An acquire (either form) and its release; a get (either form) with the
    // size and the set; an asynchronous call and its cancel (ABI 1.8).
    const bool acquires = SMP_MODULE_HOOK(module, counter_acquire) != nullptr ||
                          SMP_MODULE_HOOK(module, counter_acquire_async) != nullptr;
    if (acquires != (SMP_MODULE_HOOK(module, counter_release) != nullptr))
        return who + ": counter_acquire (or counter_acquire_async) and counter_release come together";
    const bool gets =
        SMP_MODULE_HOOK(module, cache_get) != nullptr || SMP_MODULE_HOOK(module, cache_get_async) != nullptr;
    const int cache_hooks =
        (SMP_MODULE_HOOK(module, cache_max_size) != nullptr) + gets + (SMP_MODULE_HOOK(module, cache_set) != nullptr);
    if (cache_hooks != 0 && cache_hooks != 3)
        return who + ": cache_max_size, cache_get (or cache_get_async) and cache_set come together";
    const bool asynchronous = SMP_MODULE_HOOK(module, counter_acquire_async) != nullptr ||
                              SMP_MODULE_HOOK(module, cache_get_async) != nullptr;
    if (asynchronous != (SMP_MODULE_HOOK(module, cancel_async) != nullptr))
        return who + ": counter_acquire_async or cache_get_async and cancel_async come together";
    if ((SMP_MODULE_HOOK(module, query) == nullptr) != (SMP_MODULE_HOOK(module, free_table) == nullptr))
        return who + ": query and free_table come together";
    return {};
}

SharedObject::~SharedObject() {
    if (handle_ != nullptr) dlclose(handle_);
}

std::vector<std::string> module_search_path(const Config& config) {
    if (!config.module_dir.empty()) return {config.module_dir};
    const std::string build_root = SMP_BUILD_ROOT;
    if (executable_dir().starts_with(build_root))
        return {build_root + "/protocols/%", build_root + "/plugins/%", build_root + "/tests/fixtures"};
    // Installed: beside the binary first (a tree moved elsewhere), then where
    // it was installed; one entry when they are the same.
    const std::string installed = SMP_MODULE_DIR;
    const std::string from_bin = SMP_MODULE_DIR_FROM_BIN;
    if (from_bin.empty()) return {installed};
    const std::string beside = std::filesystem::path(executable_dir() + "/" + from_bin).lexically_normal().string();
    if (beside == std::filesystem::path(installed).lexically_normal().string()) return {installed};
    return {beside, installed};
}

std::vector<std::unique_ptr<ModuleInstance>> load_modules(const Config& config, const smp_core_api& core) {
    ErrorList errors(config.path);
    std::vector<std::unique_ptr<ModuleInstance>> modules;
    std::map<std::string, std::pair<std::shared_ptr<SharedObject>, const smp_module*>> loaded;
    const auto search_path = module_search_path(config);

    auto load = [&](const ModuleEntry& entry, smp_module_kind kind) {
        const std::string key = entry.key + ".module";
        auto found = loaded.find(entry.module);
        if (found == loaded.end()) {
            std::string tried;
            std::string path;
            for (std::string dir : search_path) {
                if (auto at = dir.find('%'); at != std::string::npos) dir.replace(at, 1, entry.module);
                const std::string candidate = dir + "/" + entry.module + ".so";
                tried += (tried.empty() ? "" : ", ") + candidate;
                if (is_readable(candidate)) {
                    path = candidate;
                    break;
                }
            }
            if (path.empty()) {
                errors.add(entry.node["module"], key,
                           "module '" + entry.module + "' not found (looked for " + tried + ")");
                return;
            }
            // RTLD_NODELETE: a module and the libraries it brings stay in the
            // process once loaded. Library setup done once per process
            // (mongoc_init, OpenSSL) must not be undone by a reload that drops
            // a module, nor done again by one that names it once more.
            void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
            if (handle == nullptr) {
                errors.add(entry.node["module"], key, "module '" + entry.module + "' failed to load: " + dlerror());
                return;
            }
            auto object = std::make_shared<SharedObject>(handle, path);
            auto entry_fn = reinterpret_cast<smp_module_entry_fn>(dlsym(handle, SMP_MODULE_ENTRY_SYMBOL));
            if (entry_fn == nullptr) {
                errors.add(entry.node["module"], key,
                           "module '" + entry.module + "' (" + path + ") does not export " SMP_MODULE_ENTRY_SYMBOL);
                return;
            }
            found = loaded.emplace(entry.module, std::make_pair(object, entry_fn())).first;
        }
        const smp_module* api = found->second.second;
        if (auto problem = check_module(api, entry.module, kind); !problem.empty()) {
            errors.add(entry.node["module"], key, problem + " (" + found->second.first->path() + ")");
            return;
        }
        auto instance = std::make_unique<ModuleInstance>();
        instance->entry = &entry;
        instance->object = found->second.first;
        instance->api = api;
        instance->values.read(entry, *api, kind == SMP_MODULE_PROTOCOL, errors);
        modules.push_back(std::move(instance));
    };
    for (const auto& entry : config.protocols) load(entry, SMP_MODULE_PROTOCOL);
    for (const auto& entry : config.plugins) load(entry, SMP_MODULE_PLUGIN);
    if (!errors.empty()) throw ConfigErrors(errors.take());

    const bool has_store = std::any_of(modules.begin(), modules.end(),
                                       [](const auto& m) { return SMP_MODULE_HOOK(m->api, store) != nullptr; });
    if (config.tracking.enabled && !has_store) {
        std::error_code error;
        std::filesystem::create_directories(config.state_dir, error);
        if (error)
            throw ConfigErrors({config.path + ": state_dir: cannot create " + config.state_dir + " for the default " +
                                "store: " + error.message() + " (set state_dir, name a store under plugins, or " +
                                "set tracking.enabled: false)"});
        auto entry = std::make_unique<ModuleEntry>();
        entry->module = "sqlite";
        entry->key = "default store";
        entry->node["module"] = "sqlite";
        entry->node["path"] = config.state_dir + "/stats.db";
        load(*entry, SMP_MODULE_PLUGIN);
        if (!errors.empty()) throw ConfigErrors(errors.take());
        modules.back()->implied_entry = std::move(entry);
    }

    for (auto& module : modules) {
        std::array<char, 512> message{};
        int result = SMP_ERROR;
        initializing = module.get();
        initializing_file = &errors;
        try {
            result = module->api->init_master(&core, module->values.data_for(*module->api), &module->instance,
                                              message.data(), message.size());
        } catch (...) {
            std::snprintf(message.data(), message.size(), "threw an exception across the C boundary");
        }
        initializing = nullptr;
        if (result != SMP_OK) report_init_error(*module, message.data(), errors);
    }
    if (!errors.empty()) {
        unload_modules(modules);
        throw ConfigErrors(errors.take());
    }
    return modules;
}

void unload_modules(std::vector<std::unique_ptr<ModuleInstance>>& modules) {
    for (auto it = modules.rbegin(); it != modules.rend(); ++it) {
        auto& module = **it;
        if (module.instance != nullptr && module.api->exit_master != nullptr) module.api->exit_master(module.instance);
        module.instance = nullptr;
    }
}

}  // namespace smp
