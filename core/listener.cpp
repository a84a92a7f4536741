#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "runtime.hpp"

namespace smp {
namespace {

struct AddressInfoDeleter {
    void operator()(addrinfo* info) const noexcept { freeaddrinfo(info); }
};

std::string format_address(const std::string& host, uint16_t port) {
    const bool ipv6 = host.find(':') != std::string::npos;
    return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

int bind_one(const addrinfo& address, int backlog, bool reuseport, const std::string& name) {
    const int fd = socket(address.ai_family, address.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, address.ai_protocol);
    if (fd < 0) throw std::runtime_error("cannot create a socket for " + name + ": " + std::strerror(errno));
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    if (address.ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    if (bind(fd, address.ai_addr, address.ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        const int error = errno;
        close(fd);
        throw std::runtime_error("cannot listen on " + name + ": " + std::strerror(error));
    }
    return fd;
}

}  // namespace

std::vector<Listener> bind_listeners(const Config& config,
                                     const std::vector<std::unique_ptr<ModuleInstance>>& modules) {
    std::vector<Listener> listeners;
    for (const auto& module : modules) {
        if (module->api->kind != SMP_MODULE_PROTOCOL) continue;
        const ModuleEntry& entry = *module->entry;
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        addrinfo* found = nullptr;
        const std::string port = std::to_string(entry.port);
        if (int error = getaddrinfo(entry.host.c_str(), port.c_str(), &hints, &found); error != 0)
            throw std::runtime_error(entry.key + ".host: cannot resolve '" + entry.host + "': " + gai_strerror(error));
        std::unique_ptr<addrinfo, AddressInfoDeleter> owner(found);

        Listener listener;
        listener.entry = &entry;
        listener.protocol = module.get();
        listener.address = format_address(entry.host, entry.port);
        spdlog::info("Binding on {}", listener.address);
        // SO_REUSEPORT would let this server share a port that another
        // process listens on, splitting its traffic silently: a plain bind
        // first finds out whether the port is free.
        if (config.reuseport) close(bind_one(*found, config.backlog, false, listener.address));
        const int sockets = config.reuseport ? config.workers : 1;
        try {
            for (int i = 0; i < sockets; ++i)
                listener.fds.push_back(bind_one(*found, config.backlog, config.reuseport, listener.address));
        } catch (...) {
            for (int fd : listener.fds) close(fd);
            close_listeners(listeners);
            throw;
        }
        listeners.push_back(std::move(listener));
    }
    return listeners;
}

void close_listeners(std::vector<Listener>& listeners) {
    for (auto& listener : listeners) {
        for (int fd : listener.fds) close(fd);
        listener.fds.clear();
    }
}

}  // namespace smp
