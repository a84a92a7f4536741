#include "notify.hpp"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdlib>
#include <cstring>

#include "log.hpp"

namespace smp {
namespace {

uint64_t monotonic_us() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
}

}  // namespace

Notifier::Notifier() {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    enabled_ = socket != nullptr && *socket != '\0';
    uint64_t watchdog_us = 0;
    // Half the period, as sd_watchdog_enabled(3) advises, so that one late
    // loop turn does not get the service killed.
    if (sd_watchdog_enabled(0, &watchdog_us) > 0 && watchdog_us > 0)
        watchdog_interval_ms_ = std::max<uint64_t>(1, watchdog_us / 2000);
}

void Notifier::ready(const std::string& status) {
    last_status_ = status;
    send("READY=1\nSTATUS=" + status);
}

void Notifier::reloading() {
    // MONOTONIC_USEC lets a systemd that knows Type=notify-reload (253+) tell
    // this reload from an earlier one; older ones ignore it.
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_us()) + "\nSTATUS=Reloading the configuration");
}

void Notifier::stopping() { send("STOPPING=1\nSTATUS=Stopping: running transfers finish"); }

void Notifier::watchdog() { send("WATCHDOG=1"); }

void Notifier::status(const std::string& status) {
    if (status == last_status_) return;
    last_status_ = status;
    send("STATUS=" + status);
}

void Notifier::send(const std::string& state) {
    if (!enabled_) return;
    if (const int error = sd_notify(0, state.c_str()); error < 0)
        spdlog::debug("sd_notify failed: {}", std::strerror(-error));
}

}  // namespace smp
