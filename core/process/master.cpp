// The master: start-up, signals, forking and reaping the children, and the
// graceful stop. A reload is in master_reload.cpp, what a forked child runs
// in master_child.cpp.
#include "master.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "record_log.hpp"

namespace smp {
namespace {

// A worker that dies within this time of its start counts as a quick failure;
// quick failures in a row back off, so a broken worker does not fork-loop.
constexpr uint64_t kQuickFailureMs = 1000;
constexpr uint64_t kMaxBackoffMs = 10'000;
constexpr uint64_t kHousekeepingMs = 1000;

sigset_t handled_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    for (int signal : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1}) sigaddset(&signals, signal);
    return signals;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
    return "stopped";
}

void close_handle(uv_handle_t* handle) {
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
}

}  // namespace

Master::Master(std::unique_ptr<Runtime> runtime, std::string config_path, std::string environment)
    : current_(std::move(runtime)), config_path_(std::move(config_path)), environment_(std::move(environment)) {
    the_worker_board() = &board_;
    name_metrics(*current_);
}

// The modules' names get their places in the metrics' labels here, before
// any fork, so that no two processes ever write a name.
void Master::name_metrics(const Runtime& runtime) {
    for (const auto& module : runtime.modules) {
        if (module->api->kind == SMP_MODULE_PROTOCOL)
            board_.metrics().module_place(module->entry->module);
        else
            board_.metrics().plugin_place(module->entry->module);
        if (SMP_MODULE_HOOK(module->api, store) != nullptr) board_.metrics().store_place(module->entry->module);
    }
}

int Master::run() {
    // Signals are read from a signalfd on the master's loop. They stay
    // blocked in the workers too, which read their own the same way: no
    // signal handler state is shared across fork.
    const sigset_t signals = handled_signals();
    sigprocmask(SIG_BLOCK, &signals, nullptr);
    signal_fd_ = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd_ < 0) throw std::system_error(errno, std::generic_category(), "signalfd for the master");
    if (int error = uv_loop_init(&loop_); error != 0)
        throw std::runtime_error(std::string("cannot create the master's event loop: ") + uv_strerror(error));
    if (int error = uv_poll_init(&loop_, &signal_poll_, signal_fd_); error != 0)
        throw std::system_error(-error, std::generic_category(), "watching the master's signals");
    signal_poll_.data = this;
    uv_poll_start(&signal_poll_, UV_READABLE, on_signal);
    for (uv_timer_t* timer : {&shutdown_timer_, &ready_timer_, &housekeeping_timer_}) {
        uv_timer_init(&loop_, timer);
        timer->data = this;
    }
    const uint64_t housekeeping_ms = notifier_.watchdog_interval_ms() > 0
                                         ? std::min(kHousekeepingMs, notifier_.watchdog_interval_ms())
                                         : kHousekeepingMs;
    uv_timer_start(&housekeeping_timer_, on_housekeeping, housekeeping_ms, housekeeping_ms);

    for (int shard = 0; shard < current_->config.tracking.collectors; ++shard) {
        auto slot = std::make_unique<Slot>();
        slot->master = this;
        slot->index = static_cast<size_t>(shard);
        slot->collector = true;
        uv_timer_init(&loop_, &slot->respawn_timer);
        slot->respawn_timer.data = slot.get();
        collectors_.push_back(std::move(slot));
    }
    if (current_->config.tracking.enabled) {
        // Every log an earlier run left has lost its writer: the collectors
        // read what they hold and delete them.
        for (const auto& dir : record_log_dirs(current_->config.state_dir))
            if (const size_t left = RecordLogDirectory(dir).end_all_left())
                spdlog::info("{} tracking log(s) of an earlier run in {}: their records go to the stores", left, dir);
        for (auto& collector : collectors_) spawn_collector(*collector);
    }

    slots_ = make_slots(*current_);
    for (auto& slot : slots_) spawn(*slot);
    spdlog::info("Running success: {} worker(s) serving", slots_.size());
    // READY=1 once every worker accepts; the sockets listen already, so
    // connections made meanwhile wait in the backlog.
    uv_timer_start(&ready_timer_, on_ready_timer, kReadyPollMs, kReadyPollMs);

    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    ::close(signal_fd_);
    spdlog::info("Stopped");
    return 0;
}

Master::Slots Master::make_slots(Runtime& runtime) {
    Slots slots;
    for (int i = 0; i < runtime.config.workers; ++i) {
        auto slot = std::make_unique<Slot>();
        slot->master = this;
        slot->runtime = &runtime;
        slot->index = static_cast<size_t>(i);
        uv_timer_init(&loop_, &slot->respawn_timer);
        slot->respawn_timer.data = slot.get();
        slots.push_back(std::move(slot));
    }
    return slots;
}

void Master::close_slot(std::unique_ptr<Slot> slot) {
    uv_timer_stop(&slot->respawn_timer);
    Slot* owned = slot.release();
    uv_close(reinterpret_cast<uv_handle_t*>(&owned->respawn_timer),
             [](uv_handle_t* handle) { delete static_cast<Slot*>(handle->data); });
}

std::vector<int> Master::create_record_logs(const Runtime& runtime, size_t slot_index) {
    std::vector<int> fds;
    const uid_t uid = runtime.user ? runtime.user->uid : static_cast<uid_t>(-1);
    const gid_t gid = runtime.user ? runtime.user->gid : static_cast<gid_t>(-1);
    const std::string first = record_log_dir(runtime.config.state_dir, 0);
    for (size_t shard = 0; shard < collectors_.size(); ++shard) {
        RecordLogDirectory logs(record_log_dir(runtime.config.state_dir, static_cast<int>(shard)), first);
        std::string error;
        auto created = logs.create(static_cast<uint64_t>(runtime.config.tracking.log_size), uid, gid, error);
        if (!created) {
            spdlog::error("worker {} has no tracking log, its records are dropped and counted: {}", slot_index + 1,
                          error);
            fds.push_back(-1);
            continue;
        }
        if (!created->warning.empty()) spdlog::warn("tracking log {}: {}", created->number, created->warning);
        fds.push_back(created->fd);
    }
    return fds;
}

void Master::spawn(Slot& slot) {
    Runtime& runtime = *slot.runtime;
    if (runtime.config.tracking.enabled) spawning_log_fds_ = create_record_logs(runtime, slot.index);
    slot.seat = board_.take();
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        board_.give_back(slot.seat);
        slot.seat = nullptr;
        for (int fd : std::exchange(spawning_log_fds_, {}))
            if (fd >= 0) RecordLogDirectory::end(fd);
        spdlog::error("cannot fork worker {}: {}; retrying", slot.index + 1, std::strerror(errno));
        uv_timer_start(&slot.respawn_timer, on_respawn_timer, kMaxBackoffMs, 0);
        return;
    }
    if (pid == 0) become_worker(slot);
    if (!spawning_log_fds_.empty()) worker_logs_[pid] = std::exchange(spawning_log_fds_, {});
    slot.pid = pid;
    slot.started_ms = uv_now(&loop_);
    spdlog::info("Success: detached with pid <{}>, parent pid <{}> (worker {})", pid, parent, slot.index + 1);
}

void Master::spawn_collector(Slot& slot) {
    collector_runtime_ = current_;
    const pid_t pid = fork();
    if (pid < 0) {
        spdlog::error("cannot fork the stats collector: {}; retrying", std::strerror(errno));
        uv_timer_start(&slot.respawn_timer, on_respawn_timer, kMaxBackoffMs, 0);
        return;
    }
    if (pid == 0) become_collector(slot);
    slot.pid = pid;
    slot.started_ms = uv_now(&loop_);
    collector_stopping_ = false;
    spdlog::info("Success: detached with pid <{}>, parent pid <{}> (stats collector{})", pid, getpid(),
                 collectors_.size() > 1 ? fmt::format(" {}", slot.index + 1) : "");
}

Master::Slot* Master::collector_of(pid_t pid) {
    for (auto& slot : collectors_)
        if (slot->pid == pid) return slot.get();
    return nullptr;
}

size_t Master::running_collectors() const {
    return static_cast<size_t>(
        std::count_if(collectors_.begin(), collectors_.end(), [](const auto& slot) { return slot->pid > 0; }));
}

void Master::end_record_log(pid_t worker) {
    auto logs = worker_logs_.find(worker);
    if (logs == worker_logs_.end()) return;
    // The collector ends that worker's running requests (worker_lost) once
    // it has read the log to its end.
    for (int fd : logs->second)
        if (fd >= 0) RecordLogDirectory::end(fd);
    worker_logs_.erase(logs);
}

// Every configuration that still has processes: the current one, a
// reload's until it is ready, and the retiring ones until their last worker ends.
std::set<Runtime*> Master::live_runtimes() const {
    std::set<Runtime*> runtimes{current_.get(), incoming_.get()};
    for (const auto& retiring : retiring_) runtimes.insert(retiring.runtime.get());
    runtimes.erase(nullptr);
    return runtimes;
}

void Master::tell_modules_gone(pid_t worker) {
    for (Runtime* runtime : live_runtimes())
        for (auto& module : runtime->modules)
            if (auto gone = SMP_MODULE_HOOK(module->api, worker_gone_master); gone != nullptr && module->instance)
                gone(module->instance, static_cast<int>(worker));
}

void Master::on_signal(uv_poll_t* handle, int /*status*/, int /*events*/) {
    auto& master = *static_cast<Master*>(handle->data);
    signalfd_siginfo info{};
    while (read(master.signal_fd_, &info, sizeof info) == sizeof info) {
        switch (info.ssi_signo) {
            case SIGCHLD: master.reap_children(); break;
            case SIGTERM:
            case SIGINT:
            case SIGQUIT: master.begin_shutdown(static_cast<int>(info.ssi_signo)); break;
            case SIGHUP: master.reload(); break;
            case SIGUSR1: master.reopen_logs(); break;
            default: break;
        }
    }
}

void Master::reap_children() {
    int status = 0;
    pid_t pid = 0;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        Slot* collector = collector_of(pid);
        if (collector == nullptr) {
            // Before anything is forked again: a new worker could get this pid.
            tell_modules_gone(pid);
            end_record_log(pid);
            reap_worker(pid, status);
            continue;
        }
        collector->pid = 0;
        if (stopping_) {
            spdlog::info("Stats collector (pid {}) {}", pid, describe_status(status));
        } else if (!current_->config.tracking.enabled) {
            spdlog::info("Stats collector (pid {}) {}: tracking is off in the new configuration", pid,
                         describe_status(status));
            if (running_collectors() == 0) collector_runtime_.reset();
        } else if (collector->restart) {
            // It flushed its stores and checkpointed; the new collector
            // continues from there.
            collector->restart = false;
            spdlog::info("Stats collector (pid {}) {}; starting the new configuration's", pid, describe_status(status));
            spawn_collector(*collector);
        } else {
            // Records wait in the workers' logs for the next collector.
            const uint64_t delay = next_start_delay(*collector, uv_now(&loop_));
            spdlog::error("Stats collector (pid {}) {}; starting a new one in {} ms", pid, describe_status(status),
                          delay);
            uv_timer_start(&collector->respawn_timer, on_respawn_timer, delay, 0);
        }
    }
    finish_if_done();
}

// False when `pid` is none of the workers.
bool Master::reap_worker(pid_t pid, int status) {
    auto retired = std::find_if(retiring_.begin(), retiring_.end(), [pid](const Retiring& r) { return r.pid == pid; });
    if (retired != retiring_.end()) {
        spdlog::info("Old worker (pid {}) {}", pid, describe_status(status));
        board_.give_back(retired->seat);
        retiring_.erase(retired);  // the last one of a generation runs its modules' exit_master
        if (!retiring_.empty() || stopping_) return true;
        spdlog::info("Reload complete: every old worker has finished");
        return true;
    }
    auto owns = [pid](const std::unique_ptr<Slot>& s) { return s->pid == pid; };
    if (auto found = std::find_if(incoming_slots_.begin(), incoming_slots_.end(), owns);
        found != incoming_slots_.end()) {
        Slot& slot = **found;
        board_.give_back(slot.seat);
        slot.seat = nullptr;
        slot.pid = 0;
        if (!stopping_)
            abort_reload(fmt::format("worker {} of the new configuration (pid {}) {} before it was ready",
                                     slot.index + 1, pid, describe_status(status)));
        return true;
    }
    auto found = std::find_if(slots_.begin(), slots_.end(), owns);
    if (found == slots_.end()) return false;
    Slot& slot = **found;
    board_.give_back(slot.seat);
    slot.seat = nullptr;
    slot.pid = 0;
    if (stopping_) {
        spdlog::info("Worker {} (pid {}) {}", slot.index + 1, pid, describe_status(status));
        return true;
    }
    const uint64_t lived_ms = uv_now(&loop_) - slot.started_ms;
    const uint64_t delay = next_start_delay(slot, uv_now(&loop_));
    if (delay == 0) {
        spdlog::warn("Worker {} (pid {}) {}; starting a new one", slot.index + 1, pid, describe_status(status));
        spawn(slot);
    } else {
        spdlog::error("Worker {} (pid {}) {} {} ms after start; next try in {} ms", slot.index + 1, pid,
                      describe_status(status), lived_ms, delay);
        uv_timer_start(&slot.respawn_timer, on_respawn_timer, delay, 0);
    }
    return true;
}

void Master::on_respawn_timer(uv_timer_t* timer) {
    auto& slot = *static_cast<Slot*>(timer->data);
    Master& master = *slot.master;
    if (master.stopping_) return;
    if (slot.collector) {
        if (master.current_->config.tracking.enabled && slot.pid == 0) master.spawn_collector(slot);
        return;
    }
    if (slot.pid == 0) master.spawn(slot);
}

uint64_t Master::next_start_delay(Slot& slot, uint64_t now_ms) {
    const uint64_t lived_ms = now_ms - slot.started_ms;
    slot.quick_failures = lived_ms < kQuickFailureMs ? slot.quick_failures + 1 : 0;
    if (slot.quick_failures == 0) return 0;
    return std::min(kMaxBackoffMs, uint64_t{100} << std::min(slot.quick_failures, 7));
}

bool Master::all_ready(const Slots& slots) {
    return std::all_of(slots.begin(), slots.end(), [](const std::unique_ptr<Slot>& s) {
        return s->pid > 0 && s->seat != nullptr && s->seat->ready.load(std::memory_order_acquire) != 0;
    });
}

void Master::on_ready_timer(uv_timer_t* timer) {
    auto& master = *static_cast<Master*>(timer->data);
    if (master.incoming_) {
        if (all_ready(master.incoming_slots_))
            master.commit_reload();
        else if (uv_now(&master.loop_) - master.reload_started_ms_ >= kReadyTimeoutMs)
            master.abort_reload(fmt::format("the new workers were not ready within {} ms", kReadyTimeoutMs));
        return;
    }
    if (master.starting_ && all_ready(master.slots_)) {
        master.starting_ = false;
        uv_timer_stop(timer);
        spdlog::info("Ready: {} worker(s) accepting", master.slots_.size());
        master.notifier_.ready(master.status_text());
    }
}

void Master::reopen_logs() {
    spdlog::info("SIGUSR1: reopening the log files");
    if (current_->user) give_log_files(current_->config.log, *current_->user);
    if (auto problem = reopen_log_files(); !problem.empty()) spdlog::error("{}", problem);
    if (auto problem = current_->access_log.reopen(); !problem.empty()) spdlog::error("{}", problem);
    for (pid_t pid : children()) kill(pid, SIGUSR1);
}

std::vector<pid_t> Master::children() const {
    std::vector<pid_t> pids;
    for (const Slots* slots : {&slots_, &incoming_slots_})
        for (const auto& slot : *slots)
            if (slot->pid > 0) pids.push_back(slot->pid);
    for (const auto& retiring : retiring_) pids.push_back(retiring.pid);
    for (const auto& collector : collectors_)
        if (collector->pid > 0) pids.push_back(collector->pid);
    return pids;
}

std::string Master::status_text() const {
    int64_t connections = 0;
    int64_t downloads = 0;
    auto add = [&](const WorkerSeat* seat) {
        if (seat == nullptr) return;
        connections += seat->connections.load(std::memory_order_relaxed);
        downloads += seat->downloads.load(std::memory_order_relaxed);
    };
    for (const Slots* slots : {&slots_, &incoming_slots_})
        for (const auto& slot : *slots) add(slot->seat);
    for (const auto& retiring : retiring_) add(retiring.seat);
    std::string text = fmt::format("{} worker(s), {} connection(s), {} download(s) in progress", slots_.size(),
                                   connections, downloads);
    if (!retiring_.empty()) text += fmt::format("; {} old worker(s) finishing", retiring_.size());
    return text;
}

void Master::on_housekeeping(uv_timer_t* timer) {
    auto& master = *static_cast<Master*>(timer->data);
    if (master.notifier_.watchdog_interval_ms() > 0) master.notifier_.watchdog();
    if (!master.starting_ && !master.stopping_ && !master.incoming_) master.notifier_.status(master.status_text());
    const uint64_t now = uv_now(&master.loop_);
    for (auto& retiring : master.retiring_)
        if (now >= retiring.deadline_ms && retiring.deadline_ms != 0) {
            spdlog::warn("Old worker (pid {}) still busy shutdown_timeout after the reload: stopping it now",
                         retiring.pid);
            kill(retiring.pid, SIGKILL);
            retiring.deadline_ms = 0;
        }
}

void Master::begin_shutdown(int signal) {
    if (stopping_) return;
    stopping_ = true;
    notifier_.stopping();
    spdlog::info("{}: stopping; running transfers have {} ms to finish", strsignal(signal),
                 current_->config.shutdown_timeout_ms);
    // The workers hold their own copies; once they close theirs the sockets
    // close and the kernel refuses new connections.
    close_listeners(current_->listeners);
    if (incoming_) close_listeners(incoming_->listeners);
    uv_timer_stop(&ready_timer_);
    for (const Slots* slots : {&slots_, &incoming_slots_, &collectors_})
        for (const auto& slot : *slots) uv_timer_stop(&slot->respawn_timer);
    for (pid_t pid : children())
        if (collector_of(pid) == nullptr) kill(pid, SIGTERM);
    uv_timer_start(&shutdown_timer_, on_shutdown_timeout, static_cast<uint64_t>(current_->config.shutdown_timeout_ms),
                   0);
    finish_if_done();
}

void Master::on_shutdown_timeout(uv_timer_t* timer) {
    auto& master = *static_cast<Master*>(timer->data);
    if (master.collector_stopping_) {
        // Its records are in the workers' logs, which the next start reads
        // from the last checkpoint: stored once, nothing lost.
        spdlog::warn(
            "the stats collector is still storing shutdown_timeout after the workers ended (a store or "
            "disk that does not answer?): stopping it now; the tracking logs keep its records for the "
            "next start");
        for (const auto& collector : master.collectors_)
            if (collector->pid > 0) kill(collector->pid, SIGKILL);
        return;
    }
    spdlog::warn("shutdown_timeout reached: stopping the remaining workers now");
    for (pid_t pid : master.children())
        if (master.collector_of(pid) == nullptr) kill(pid, SIGKILL);
}

void Master::finish_if_done() {
    if (!stopping_ || finished_) return;
    const std::vector<pid_t> running = children();
    const size_t collectors = running_collectors();
    if (running.size() > collectors) return;
    // The collectors go last: every record of the workers is in their logs by now.
    if (collectors > 0) {
        if (!collector_stopping_) {
            for (const auto& collector : collectors_)
                if (collector->pid > 0) kill(collector->pid, SIGTERM);
            // The collectors get a shutdown_timeout of their own to store
            // what is left; the workers' one may be spent.
            uv_timer_start(&shutdown_timer_, on_shutdown_timeout,
                           static_cast<uint64_t>(current_->config.shutdown_timeout_ms), 0);
        }
        collector_stopping_ = true;
        return;
    }
    finished_ = true;  // a second SIGCHLD read in the same turn must not close the handles again
    for (uv_handle_t* handle :
         {reinterpret_cast<uv_handle_t*>(&signal_poll_), reinterpret_cast<uv_handle_t*>(&shutdown_timer_),
          reinterpret_cast<uv_handle_t*>(&ready_timer_), reinterpret_cast<uv_handle_t*>(&housekeeping_timer_)})
        close_handle(handle);
    for (Slots* slots : {&slots_, &incoming_slots_, &collectors_}) {
        for (auto& slot : *slots) close_slot(std::move(slot));
        slots->clear();
    }
}

}  // namespace smp
