// The master process: forks the workers and supervises them. It does no
// request work; its loop only watches signals and timers.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <vector>

#include "runtime.hpp"

namespace smp {

class Master {
   public:
    explicit Master(Runtime& runtime) : runtime_(runtime) {}
    Master(const Master&) = delete;
    Master& operator=(const Master&) = delete;

    // Forks the workers and supervises them until a graceful stop ends;
    // returns the exit code.
    int run();

   private:
    struct Slot {
        pid_t pid = 0;
        uint64_t started_ms = 0;
        int quick_failures = 0;  // deaths soon after start, in a row
        uv_timer_t respawn_timer{};
    };

    static void on_signal(uv_poll_t* handle, int status, int events);
    static void on_respawn_timer(uv_timer_t* timer);
    static void on_shutdown_timeout(uv_timer_t* timer);
    void spawn(size_t slot);
    void spawn_collector();
    void tell_collector_lost(pid_t worker);
    void reap_children();
    void begin_shutdown(int signal);
    // 0 to start again at once, or the back-off after deaths soon after start.
    static uint64_t next_start_delay(Slot& slot, uint64_t now_ms);
    void finish_if_done();
    [[noreturn]] void become_worker(size_t slot);
    [[noreturn]] void become_collector();
    void close_inherited_descriptors();

    Runtime& runtime_;
    uv_loop_t loop_{};
    uv_poll_t signal_poll_{};
    uv_timer_t shutdown_timer_{};
    int signal_fd_ = -1;
    std::vector<Slot> slots_;
    Slot collector_;  // pid 0 when tracking is off or it is not running
    bool stopping_ = false;
    bool finished_ = false;
    bool collector_stopping_ = false;
};

}  // namespace smp
