// Loads modules (.so) by name, checks their ABI, and turns their YAML entries
// into the values their key table asks for.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "module_values.hpp"
#include "smp_module.h"

namespace smp {

// Why `module` cannot be used as `name` of `kind`; empty when it can. The
// module's own `size` is checked before any other field is read, and a field
// of a later minor is read only when `size` covers it.
std::string check_module(const smp_module* module, std::string_view name, smp_module_kind kind);

// A loaded .so. dlclose'd when the last reference goes.
class SharedObject {
   public:
    SharedObject(void* handle, std::string path) : handle_(handle), path_(std::move(path)) {}
    ~SharedObject();
    SharedObject(const SharedObject&) = delete;
    SharedObject& operator=(const SharedObject&) = delete;
    const std::string& path() const { return path_; }

   private:
    void* handle_;
    std::string path_;
};

// One module entry of the config, loaded and, after init_master, running.
struct ModuleInstance {
    const ModuleEntry* entry = nullptr;          // in the config, or implied_entry
    std::unique_ptr<ModuleEntry> implied_entry;  // the default store, named by no entry
    std::shared_ptr<SharedObject> object;
    const smp_module* api = nullptr;
    ModuleValues values;
    void* instance = nullptr;      // from init_master
    void* worker_state = nullptr;  // from init_worker, in a worker
};

// The directories searched for `<name>.so`, first match wins: module_dir
// when configured; else the build tree when the binary runs from it; else
// the installed module directory.
std::vector<std::string> module_search_path(const Config& config);

// Loads every protocol and plugin of `config`, checks ABI and keys, and runs
// init_master. With tracking on and no store among the plugins, the sqlite
// store is added, its database at state_dir/stats.db. Throws ConfigErrors
// listing every problem.
std::vector<std::unique_ptr<ModuleInstance>> load_modules(const Config& config, const smp_core_api& core);

// core->config_warning (ABI 1.9): a warning about the configuration from the
// init_master that runs now, at the line of the key it starts with.
void config_warning(const char* message);

// Runs exit_master on every instance, in reverse order.
void unload_modules(std::vector<std::unique_ptr<ModuleInstance>>& modules);

}  // namespace smp
