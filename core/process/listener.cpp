#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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

// Takes over the sockets of a listener that a reload keeps: each is
// duplicated, so that either generation closes its own descriptors
// without closing the socket under the other, and listen(2) again applies
// a changed backlog to it.
void share_sockets(const Listener& old, const Config& config, Listener& listener) {
    if (old.reuseport != config.reuseport)
        throw std::runtime_error("reuseport: cannot change while the server listens on " + listener.address +
                                 "; restart the server to change it");
    for (int fd : old.fds) {
        const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (copy < 0)
            throw std::runtime_error("cannot share the socket of " + listener.address + ": " + std::strerror(errno));
        listener.fds.push_back(copy);
        listen(copy, config.backlog);
    }
}

}  // namespace

std::vector<int> Listener::fds_for(int slot, int workers) const {
    if (!reuseport) return {fds[0]};
    std::vector<int> mine;
    for (size_t i = static_cast<size_t>(slot); i < fds.size(); i += static_cast<size_t>(workers))
        mine.push_back(fds[i]);
    return mine;
}

std::vector<Listener> bind_listeners(const Config& config, const std::vector<std::unique_ptr<ModuleInstance>>& modules,
                                     const std::vector<Listener>* previous) {
    std::vector<Listener> listeners;
    for (const auto& module : modules) {
        if (module->api->kind != SMP_MODULE_PROTOCOL) continue;
        const ModuleEntry& entry = *module->entry;
        Listener listener;
        listener.entry = &entry;
        listener.protocol = module.get();
        listener.address = format_address(entry.host, entry.port);
        listener.reuseport = config.reuseport;
        const Listener* old = nullptr;
        if (previous != nullptr) {
            auto found = std::find_if(previous->begin(), previous->end(),
                                      [&](const Listener& l) { return l.address == listener.address; });
            if (found != previous->end() && !found->fds.empty()) old = &*found;
        }
        const int sockets = config.reuseport ? config.workers : 1;
        try {
            if (old != nullptr) {
                spdlog::info("Keeping {} open", listener.address);
                share_sockets(*old, config, listener);
            } else {
                spdlog::info("Binding on {}", listener.address);
            }
            if (static_cast<int>(listener.fds.size()) < sockets) {
                addrinfo hints{};
                hints.ai_socktype = SOCK_STREAM;
                hints.ai_flags = AI_PASSIVE;
                addrinfo* found = nullptr;
                const std::string port = std::to_string(entry.port);
                if (int error = getaddrinfo(entry.host.c_str(), port.c_str(), &hints, &found); error != 0)
                    throw std::runtime_error(entry.key + ".host: cannot resolve '" + entry.host +
                                             "': " + gai_strerror(error));
                std::unique_ptr<addrinfo, AddressInfoDeleter> owner(found);
                // SO_REUSEPORT would let this server share a port that another
                // process listens on, splitting its traffic silently: a plain bind
                // first finds out whether the port is free.
                if (config.reuseport && old == nullptr)
                    close(bind_one(*found, config.backlog, false, listener.address));
                while (static_cast<int>(listener.fds.size()) < sockets)
                    listener.fds.push_back(bind_one(*found, config.backlog, config.reuseport, listener.address));
            }
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
