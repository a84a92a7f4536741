// What the master tells systemd (sd_notify): READY, RELOADING, STOPPING,
// STATUS and the watchdog pings. Every call is a no-op when the server was
// not started by systemd (NOTIFY_SOCKET unset), so the master calls them
// unconditionally.
#pragma once

#include <cstdint>
#include <string>

namespace smp {

class Notifier {
   public:
    Notifier();

    // True when NOTIFY_SOCKET names a socket to talk to.
    bool enabled() const { return enabled_; }
    // The interval at which WATCHDOG=1 must be sent (half of WatchdogSec),
    // or 0 when the watchdog is off.
    uint64_t watchdog_interval_ms() const { return watchdog_interval_ms_; }

    void ready(const std::string& status);
    void reloading();
    void stopping();
    void watchdog();
    // Sends STATUS= only when it differs from the last one sent.
    void status(const std::string& status);

   private:
    void send(const std::string& state);

    bool enabled_ = false;
    uint64_t watchdog_interval_ms_ = 0;
    std::string last_status_;
};

}  // namespace smp
