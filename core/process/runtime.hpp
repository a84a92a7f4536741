// What the master builds from one configuration before fork and every
// worker of that configuration inherits. A reload builds a new one beside
// the running one; the old one lives on until its last worker has finished.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "address_set.hpp"
#include "config.hpp"
#include "loader.hpp"
#include "log.hpp"
#include "privileges.hpp"

namespace smp {

struct Listener {
    const ModuleEntry* entry = nullptr;
    ModuleInstance* protocol = nullptr;
    std::string address;  // "127.0.0.1:8081", "[::1]:8081"
    bool reuseport = false;
    // With reuseport, one socket per worker slot, and more when a reload
    // lowered `workers` (closing a socket would reset the connections
    // waiting in its queue, so it is kept and served); else one shared.
    std::vector<int> fds;
    // The sockets that worker `slot` of `workers` accepts on.
    std::vector<int> fds_for(int slot, int workers) const;
};

struct Runtime {
    Runtime() = default;
    // Runs every module's exit_master (in the master only: children leave
    // with _exit and never get here).
    ~Runtime();
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    Config config;
    std::vector<std::unique_ptr<ModuleInstance>> modules;
    std::vector<Listener> listeners;
    AccessLog access_log;
    AddressSet trusted_proxies;
    std::string node;              // host name
    std::optional<Identity> user;  // what the children become, when started as root
};

// The core API handed to every module.
const smp_core_api& core_api();

// Everything `config` needs before fork: its modules loaded (init_master
// run), the access log opened, the listeners bound. A listener whose
// address `previous` already listens on shares its sockets (duplicated
// descriptors) instead of binding again, so a reload never closes a port
// that stays. Throws ConfigErrors or std::runtime_error, and leaves
// `previous` as it was.
std::unique_ptr<Runtime> build_runtime(Config config, const Runtime* previous);

// Binds every protocol's listener as the config asks, sharing the sockets
// of `previous` listeners on the same address; throws std::runtime_error
// naming the address on failure.
std::vector<Listener> bind_listeners(const Config& config, const std::vector<std::unique_ptr<ModuleInstance>>& modules,
                                     const std::vector<Listener>* previous = nullptr);
void close_listeners(std::vector<Listener>& listeners);

}  // namespace smp
