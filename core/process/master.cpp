#include "master.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "collector.hpp"
#include "record_log.hpp"
#include "worker.hpp"

namespace smp {
namespace {

// A worker that dies within this time of its start counts as a quick failure;
// quick failures in a row back off, so a broken worker does not fork-loop.
constexpr uint64_t kQuickFailureMs = 1000;
constexpr uint64_t kMaxBackoffMs = 10'000;
// How often the master looks whether new workers are ready to accept, and
// how long a reload waits for them before it gives up and keeps the old ones.
constexpr uint64_t kReadyPollMs = 10;
constexpr uint64_t kReadyTimeoutMs = 10'000;
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

// What the stats collector was built from: when a reload changes none of
// it, the running collector is kept, with its open downloads.
std::string collector_signature(const Runtime& runtime) {
    const Config& config = runtime.config;
    if (!config.tracking.enabled) return {};
    std::string text =
        fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}", config.tracking.idle_window_ms, config.tracking.max_open_downloads,
                    config.state_dir, config.user, config.geoip.city_db, config.geoip.asn_db, config.log.file,
                    static_cast<int>(config.log.level), config.module_dir);
    for (const auto& module : runtime.modules)
        if (SMP_MODULE_HOOK(module->api, store) != nullptr)
            text += "|" + module->object->path() + "|" + YAML::Dump(module->entry->node);
    return text;
}

void close_handle(uv_handle_t* handle) {
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
}

}  // namespace

Master::Master(std::unique_ptr<Runtime> runtime, std::string config_path, std::string environment)
    : current_(std::move(runtime)), config_path_(std::move(config_path)), environment_(std::move(environment)) {}

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

void Master::close_inherited_descriptors(const Runtime* own) {
    // A fresh start: the parent's loop and signalfd are not ours (their epoll
    // instance is shared with the master), so only their descriptors are closed.
    ::close(uv_backend_fd(&loop_));
    ::close(signal_fd_);
    // The sockets of the other generations: holding one would keep a port
    // that a reload dropped listening, with nobody accepting on it.
    std::set<Runtime*> others = live_runtimes();
    others.erase(const_cast<Runtime*>(own));
    for (Runtime* other : others) close_listeners(other->listeners);
    // The other workers' logs: a child maps its own and keeps no descriptor.
    for (const auto& [pid, fds] : worker_logs_)
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
    // Credentials change first: changing them clears the parent-death signal.
    if (own != nullptr && own->user) drop_privileges(*own->user);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) _exit(0);  // the master died before prctl took effect
}

void Master::become_collector(const Slot& slot) {
    int code = 1;
    try {
        Runtime& runtime = *current_;
        close_inherited_descriptors(&runtime);
        // Holding a listener would keep it open after the workers closed theirs.
        close_listeners(runtime.listeners);
        prctl(PR_SET_NAME, "smp-collector");
        set_log_role(collectors_.size() > 1 ? fmt::format("collector {}", slot.index + 1) : "collector");
        const int shard = static_cast<int>(slot.index);
        Collector collector(runtime, record_log_dir(runtime.config.state_dir, shard), shard);
        code = collector.run();
    } catch (const std::exception& e) {
        spdlog::critical("stats collector failed: {}", e.what());
    }
    spdlog::default_logger()->flush();
    std::fflush(stdout);
    _exit(code);
}

void Master::become_worker(Slot& slot) {
    int code = 1;
    try {
        Runtime& runtime = *slot.runtime;
        std::vector<std::optional<RecordLogWriter>> logs;
        for (int fd : spawning_log_fds_) {
            auto& log = logs.emplace_back();
            if (fd < 0) continue;
            std::string error;
            if (auto mapped = MappedLog::map(fd, error))
                log.emplace(std::move(*mapped));
            else
                spdlog::error("cannot map a tracking log: {}; its share of the records is dropped", error);
            ::close(fd);
        }
        close_inherited_descriptors(&runtime);
        const int index = static_cast<int>(slot.index);
        for (auto& listener : runtime.listeners) {
            const auto mine = listener.fds_for(index, runtime.config.workers);
            for (int fd : listener.fds)
                if (std::find(mine.begin(), mine.end(), fd) == mine.end()) ::close(fd);
        }
        set_log_role("worker " + std::to_string(slot.index + 1));
        Worker worker(runtime, index, slot.seat, std::move(logs));
        code = worker.run();
    } catch (const std::exception& e) {
        spdlog::critical("worker {} failed: {}", slot.index + 1, e.what());
    }
    spdlog::default_logger()->flush();
    std::fflush(stdout);
    _exit(code);
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

void Master::reload() {
    if (stopping_) return;
    if (incoming_) {
        // One reload at a time; the file is read again once this one ends.
        reload_again_ = true;
        return;
    }
    spdlog::info("SIGHUP: reloading {}", config_path_);
    notifier_.reloading();
    std::unique_ptr<Runtime> runtime;
    try {
        Config config = load_config(config_path_, environment_);
        // A log file that cannot be opened fails the reload here, before any
        // module is loaded; the old logger stays meanwhile.
        if (config.log.file != current_->config.log.file || config.log.level != current_->config.log.level)
            setup_logging(config.log);
        runtime = build_runtime(std::move(config), current_.get());
        if (runtime->user) give_log_files(runtime->config.log, *runtime->user);
    } catch (const ConfigErrors& errors) {
        for (const auto& error : errors.errors()) spdlog::error("reload: {}", error);
        abort_reload(fmt::format("the configuration has {} error(s)", errors.errors().size()));
        return;
    } catch (const std::exception& e) {
        abort_reload(e.what());
        return;
    }
    incoming_ = std::move(runtime);
    incoming_slots_ = make_slots(*incoming_);
    for (auto& slot : incoming_slots_) spawn(*slot);
    reload_started_ms_ = uv_now(&loop_);
    uv_timer_start(&ready_timer_, on_ready_timer, kReadyPollMs, kReadyPollMs);
}

void Master::retire(Slots& slots, const std::shared_ptr<Runtime>& runtime) {
    const uint64_t deadline = uv_now(&loop_) + static_cast<uint64_t>(current_->config.shutdown_timeout_ms);
    for (auto& slot : slots) {
        if (slot->pid > 0) {
            // SIGTERM is a worker's graceful stop: it stops accepting, closes
            // its idle connections and finishes the running exchanges.
            kill(slot->pid, SIGTERM);
            retiring_.push_back({slot->pid, slot->seat, runtime, deadline});
        }
        close_slot(std::move(slot));
    }
    slots.clear();
    // The master's copies of the sockets: those the new generation keeps are
    // duplicated in it, the others close when their last worker leaves.
    close_listeners(runtime->listeners);
}

void Master::commit_reload() {
    uv_timer_stop(&ready_timer_);
    starting_ = false;
    std::shared_ptr<Runtime> previous = std::move(current_);
    current_ = std::move(incoming_);
    const size_t old_workers = retiring_.size();
    retire(slots_, previous);
    slots_ = std::move(incoming_slots_);
    incoming_slots_.clear();
    reload_collector(*previous);
    spdlog::info("Reloaded: {} worker(s) of the new configuration accepting, {} old worker(s) finishing", slots_.size(),
                 retiring_.size() - old_workers);
    notifier_.ready(status_text());
    if (std::exchange(reload_again_, false)) reload();
}

void Master::abort_reload(const std::string& reason) {
    uv_timer_stop(&ready_timer_);
    // A reload during start-up also ends the wait for READY=1.
    starting_ = false;
    if (incoming_) {
        const std::shared_ptr<Runtime> failed = std::move(incoming_);
        retire(incoming_slots_, failed);
    }
    // The log settings may have been applied before the failure was found.
    try {
        setup_logging(current_->config.log);
    } catch (const std::exception& e) {
        spdlog::warn("cannot restore the log settings: {}", e.what());
    }
    spdlog::error("reload failed: {}; still running on the previous configuration", reason);
    notifier_.ready("Reload failed: " + reason + "; " + status_text());
    if (std::exchange(reload_again_, false)) reload();
}

void Master::reload_collector(const Runtime& previous) {
    if (current_->config.tracking.collectors != static_cast<int>(collectors_.size()))
        spdlog::warn("reload: tracking.collectors changes at the next start, not at a reload: {} collector(s) kept",
                     collectors_.size());
    const bool tracking = current_->config.tracking.enabled;
    const Runtime& running = collector_runtime_ ? *collector_runtime_ : previous;
    const bool changed = collector_signature(running) != collector_signature(*current_);
    for (auto& slot : collectors_) {
        Slot& collector = *slot;
        if (!tracking) {
            if (collector.pid > 0) kill(collector.pid, SIGTERM);
            uv_timer_stop(&collector.respawn_timer);
            continue;
        }
        if (collector.pid == 0) {
            // Tracking was off, or a collector waits for its back-off to end.
            if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&collector.respawn_timer))) spawn_collector(collector);
            continue;
        }
        if (!changed) {
            spdlog::info("Stats collector (pid {}) kept: its settings did not change", collector.pid);
            continue;
        }
        // The stores changed: the collector flushes to the old ones and exits;
        // reap_children starts the new one at once.
        spdlog::info("Stats collector (pid {}) restarts: its settings changed", collector.pid);
        collector.restart = true;
        kill(collector.pid, SIGTERM);
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
        if (!collector_stopping_)
            for (const auto& collector : collectors_)
                if (collector->pid > 0) kill(collector->pid, SIGTERM);
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
