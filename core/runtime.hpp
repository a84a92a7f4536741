// What the master builds before fork and every worker inherits.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "address_set.hpp"
#include "config.hpp"
#include "loader.hpp"
#include "log.hpp"

namespace smp {

struct Listener {
    const ModuleEntry* entry = nullptr;
    ModuleInstance* protocol = nullptr;
    std::string address;   // "127.0.0.1:8081", "[::1]:8081"
    std::vector<int> fds;  // one per worker slot with reuseport, else one shared
    int fd_for(int slot) const { return fds.size() == 1 ? fds[0] : fds[static_cast<size_t>(slot)]; }
};

struct Runtime {
    Config config;
    std::vector<std::unique_ptr<ModuleInstance>> modules;
    std::vector<Listener> listeners;
    AccessLog access_log;
    AddressSet trusted_proxies;
    std::string node;  // host name
    // The records socket (a SOCK_DGRAM socketpair) when tracking is on:
    // workers and the master send on one end, the collector reads the other.
    int records_send_fd = -1;
    int records_receive_fd = -1;
};

// The core API handed to every module.
const smp_core_api& core_api();

// Binds every protocol's listener as the config asks; throws
// std::runtime_error naming the address on failure.
std::vector<Listener> bind_listeners(const Config& config, const std::vector<std::unique_ptr<ModuleInstance>>& modules);
void close_listeners(std::vector<Listener>& listeners);

}  // namespace smp
