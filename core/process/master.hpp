// The master process: forks the workers and the stats collector and
// supervises them. It does no request work; its loop only watches signals
// and timers. SIGHUP reloads the configuration: a new generation of workers
// starts beside the old one, and the old one retires once the new one is
// ready to accept.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "notify.hpp"
#include "runtime.hpp"
#include "worker_board.hpp"

namespace smp {

class Master {
   public:
    // `config_path` and `environment` are read again on SIGHUP.
    Master(std::unique_ptr<Runtime> runtime, std::string config_path, std::string environment);
    Master(const Master&) = delete;
    Master& operator=(const Master&) = delete;

    // Forks the workers and supervises them until a graceful stop ends;
    // returns the exit code.
    int run();

   private:
    // How often the master looks whether new workers are ready to accept, and
    // how long a reload waits for them before it gives up and keeps the old ones.
    static constexpr uint64_t kReadyPollMs = 10;
    static constexpr uint64_t kReadyTimeoutMs = 10'000;

    // A worker position of one generation (index 0..workers-1), or the
    // collector's. Freed in its timer's close callback.
    struct Slot {
        Master* master = nullptr;
        Runtime* runtime = nullptr;  // the generation it belongs to
        size_t index = 0;
        pid_t pid = 0;
        uint64_t started_ms = 0;
        int quick_failures = 0;  // deaths soon after start, in a row
        WorkerSeat* seat = nullptr;
        bool collector = false;  // a stats collector's slot: `index` is its shard
        bool restart = false;    // a collector stopped for the new configuration's one
        uv_timer_t respawn_timer{};
    };
    using Slots = std::vector<std::unique_ptr<Slot>>;
    // A worker of an earlier generation, finishing its running exchanges.
    struct Retiring {
        pid_t pid = 0;
        WorkerSeat* seat = nullptr;
        std::shared_ptr<Runtime> runtime;  // its modules' exit_master runs when the last one is reaped
        uint64_t deadline_ms = 0;          // then it is killed
    };

    static void on_signal(uv_poll_t* handle, int status, int events);
    static void on_respawn_timer(uv_timer_t* timer);
    static void on_shutdown_timeout(uv_timer_t* timer);
    static void on_ready_timer(uv_timer_t* timer);
    static void on_housekeeping(uv_timer_t* timer);

    void name_metrics(const Runtime& runtime);
    Slots make_slots(Runtime& runtime);
    void close_slot(std::unique_ptr<Slot> slot);
    void spawn(Slot& slot);
    void spawn_collector(Slot& slot);
    Slot* collector_of(pid_t pid);
    size_t running_collectors() const;
    // New record logs for a worker of `runtime`, one per collector shard:
    // their descriptors, -1 for one that could not be made.
    std::vector<int> create_record_logs(const Runtime& runtime, size_t slot_index);
    void end_record_log(pid_t worker);
    void tell_modules_gone(pid_t worker);
    std::set<Runtime*> live_runtimes() const;
    void reap_children();
    bool reap_worker(pid_t pid, int status);
    void begin_shutdown(int signal);
    void finish_if_done();

    // master_reload.cpp: a new generation of workers, committed or aborted,
    // and the retiring of the one that leaves.
    void reload();
    void commit_reload();
    void abort_reload(const std::string& reason);
    void retire(Slots& slots, const std::shared_ptr<Runtime>& runtime);
    void reload_collector(const Runtime& previous);
    void reopen_logs();

    static bool all_ready(const Slots& slots);
    std::vector<pid_t> children() const;
    std::string status_text() const;
    // 0 to start again at once, or the back-off after deaths soon after start.
    static uint64_t next_start_delay(Slot& slot, uint64_t now_ms);

    // master_child.cpp: what a forked child runs.
    [[noreturn]] void become_worker(Slot& slot);
    [[noreturn]] void become_collector(const Slot& slot);
    void close_inherited_descriptors(const Runtime* own);

    std::shared_ptr<Runtime> current_;
    std::shared_ptr<Runtime> incoming_;           // a reload's, until its workers are ready
    std::shared_ptr<Runtime> collector_runtime_;  // what the running collector was forked with
    std::string config_path_;
    std::string environment_;
    Notifier notifier_;
    WorkerBoard board_;
    uv_loop_t loop_{};
    uv_poll_t signal_poll_{};
    uv_timer_t shutdown_timer_{};
    uv_timer_t ready_timer_{};
    uv_timer_t housekeeping_timer_{};
    int signal_fd_ = -1;
    std::map<pid_t, std::vector<int>> worker_logs_;  // each running worker's record logs, ended when it is reaped
    std::vector<int> spawning_log_fds_;              // the logs of the worker being forked
    Slots slots_;
    Slots incoming_slots_;
    std::vector<Retiring> retiring_;
    // The stats collectors (tracking.collectors, fixed at start): pid 0
    // when tracking is off or one is not running.
    Slots collectors_;
    uint64_t reload_started_ms_ = 0;
    bool starting_ = true;       // READY=1 not sent yet
    bool reload_again_ = false;  // a SIGHUP came during a reload
    bool stopping_ = false;
    bool finished_ = false;
    bool collector_stopping_ = false;
};

}  // namespace smp
