#include "master.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "collector.hpp"
#include "worker.hpp"

namespace smp {
namespace {

// A worker that dies within this time of its start counts as a quick failure;
// quick failures in a row back off, so a broken worker does not fork-loop.
constexpr uint64_t kQuickFailureMs = 1000;
constexpr uint64_t kMaxBackoffMs = 10'000;

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

}  // namespace

int Master::run() {
    // Signals are read from a signalfd on the master's loop. They stay
    // blocked in the workers too, which read their own the same way: no
    // signal handler state is shared across fork.
    const sigset_t signals = handled_signals();
    sigprocmask(SIG_BLOCK, &signals, nullptr);
    signal_fd_ = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
    uv_loop_init(&loop_);
    uv_poll_init(&loop_, &signal_poll_, signal_fd_);
    signal_poll_.data = this;
    uv_poll_start(&signal_poll_, UV_READABLE, on_signal);
    uv_timer_init(&loop_, &shutdown_timer_);
    shutdown_timer_.data = this;

    uv_timer_init(&loop_, &collector_.respawn_timer);
    collector_.respawn_timer.data = this;
    if (runtime_.config.tracking.enabled) {
        int ends[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ends) != 0) {
            spdlog::critical("cannot create the records socket: {}", std::strerror(errno));
            return 1;
        }
        // Room for bursts: a few MiB of records queue before a worker has to drop one.
        const int bytes = 8 << 20;
        if (setsockopt(ends[0], SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
            setsockopt(ends[0], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
        runtime_.records_send_fd = ends[0];
        runtime_.records_receive_fd = ends[1];
        spawn_collector();
    }

    slots_.resize(static_cast<size_t>(runtime_.config.workers));
    for (size_t i = 0; i < slots_.size(); ++i) {
        uv_timer_init(&loop_, &slots_[i].respawn_timer);
        slots_[i].respawn_timer.data = this;
        spawn(i);
    }
    spdlog::info("Running success: {} worker(s) serving", slots_.size());

    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    ::close(signal_fd_);
    spdlog::info("Stopped");
    return 0;
}

void Master::spawn(size_t slot) {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        spdlog::error("cannot fork worker {}: {}; retrying", slot + 1, std::strerror(errno));
        uv_timer_start(&slots_[slot].respawn_timer, on_respawn_timer, kMaxBackoffMs, 0);
        return;
    }
    if (pid == 0) become_worker(slot);
    slots_[slot].pid = pid;
    slots_[slot].started_ms = uv_now(&loop_);
    spdlog::info("Success: detached with pid <{}>, parent pid <{}> (worker {})", pid, parent, slot + 1);
}

void Master::spawn_collector() {
    const pid_t pid = fork();
    if (pid < 0) {
        spdlog::error("cannot fork the stats collector: {}; retrying", std::strerror(errno));
        uv_timer_start(&collector_.respawn_timer, on_respawn_timer, kMaxBackoffMs, 0);
        return;
    }
    if (pid == 0) become_collector();
    collector_.pid = pid;
    collector_.started_ms = uv_now(&loop_);
    spdlog::info("Success: detached with pid <{}>, parent pid <{}> (stats collector)", pid, getpid());
}

void Master::tell_collector_lost(pid_t worker) {
    if (runtime_.records_send_fd < 0) return;
    CollectorNotice notice;
    notice.lost_pid = static_cast<uint32_t>(worker);
    send(runtime_.records_send_fd, &notice, sizeof notice, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void Master::close_inherited_descriptors() {
    // A fresh start: the parent's loop and signalfd are not ours (their epoll
    // instance is shared with the master), so only their descriptors are closed.
    ::close(uv_backend_fd(&loop_));
    ::close(signal_fd_);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) _exit(0);  // the master died before prctl took effect
}

void Master::become_collector() {
    close_inherited_descriptors();
    // Holding a listener would keep it open after the workers closed theirs.
    close_listeners(runtime_.listeners);
    ::close(runtime_.records_send_fd);
    prctl(PR_SET_NAME, "smp-collector");
    set_log_role("collector");
    int code = 1;
    try {
        Collector collector(runtime_, runtime_.records_receive_fd);
        code = collector.run();
    } catch (const std::exception& e) {
        spdlog::critical("stats collector failed: {}", e.what());
    }
    spdlog::default_logger()->flush();
    std::fflush(stdout);
    _exit(code);
}

void Master::become_worker(size_t slot) {
    close_inherited_descriptors();
    if (runtime_.records_receive_fd >= 0) ::close(runtime_.records_receive_fd);
    if (runtime_.config.reuseport)
        for (auto& listener : runtime_.listeners)
            for (size_t i = 0; i < listener.fds.size(); ++i)
                if (i != slot) ::close(listener.fds[i]);
    set_log_role("worker " + std::to_string(slot + 1));
    int code = 1;
    try {
        Worker worker(runtime_, static_cast<int>(slot));
        code = worker.run();
    } catch (const std::exception& e) {
        spdlog::critical("worker {} failed: {}", slot + 1, e.what());
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
            case SIGHUP: spdlog::warn("SIGHUP: configuration reload is not supported yet; still running"); break;
            case SIGUSR1: spdlog::info("SIGUSR1: log files are reopened on write"); break;
            default: break;
        }
    }
}

void Master::reap_children() {
    int status = 0;
    pid_t pid = 0;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == collector_.pid) {
            collector_.pid = 0;
            if (stopping_) {
                spdlog::info("Stats collector (pid {}) {}", pid, describe_status(status));
            } else {
                // Records sent meanwhile wait in the socket for the next collector.
                const uint64_t delay = next_start_delay(collector_, uv_now(&loop_));
                spdlog::error("Stats collector (pid {}) {}; starting a new one in {} ms", pid, describe_status(status),
                              delay);
                uv_timer_start(&collector_.respawn_timer, on_respawn_timer, delay, 0);
            }
            continue;
        }
        auto found = std::find_if(slots_.begin(), slots_.end(), [pid](const Slot& s) { return s.pid == pid; });
        if (found == slots_.end()) continue;
        const size_t slot = static_cast<size_t>(found - slots_.begin());
        found->pid = 0;
        tell_collector_lost(pid);
        if (stopping_) {
            spdlog::info("Worker {} (pid {}) {}", slot + 1, pid, describe_status(status));
            continue;
        }
        const uint64_t lived_ms = uv_now(&loop_) - found->started_ms;
        const uint64_t delay = next_start_delay(*found, uv_now(&loop_));
        if (delay == 0) {
            spdlog::warn("Worker {} (pid {}) {}; starting a new one", slot + 1, pid, describe_status(status));
            spawn(slot);
        } else {
            spdlog::error("Worker {} (pid {}) {} {} ms after start; next try in {} ms", slot + 1, pid,
                          describe_status(status), lived_ms, delay);
            uv_timer_start(&found->respawn_timer, on_respawn_timer, delay, 0);
        }
    }
    finish_if_done();
}

void Master::on_respawn_timer(uv_timer_t* timer) {
    auto& master = *static_cast<Master*>(timer->data);
    if (master.stopping_) return;
    if (timer == &master.collector_.respawn_timer) return master.spawn_collector();
    for (size_t i = 0; i < master.slots_.size(); ++i)
        if (&master.slots_[i].respawn_timer == timer && master.slots_[i].pid == 0) master.spawn(i);
}

uint64_t Master::next_start_delay(Slot& slot, uint64_t now_ms) {
    const uint64_t lived_ms = now_ms - slot.started_ms;
    slot.quick_failures = lived_ms < kQuickFailureMs ? slot.quick_failures + 1 : 0;
    if (slot.quick_failures == 0) return 0;
    return std::min(kMaxBackoffMs, uint64_t{100} << std::min(slot.quick_failures, 7));
}

void Master::begin_shutdown(int signal) {
    if (stopping_) return;
    stopping_ = true;
    spdlog::info("{}: stopping; running transfers have {} ms to finish", strsignal(signal),
                 runtime_.config.shutdown_timeout_ms);
    // The workers hold their own copies; once they close theirs the sockets
    // close and the kernel refuses new connections.
    close_listeners(runtime_.listeners);
    uv_timer_stop(&collector_.respawn_timer);
    for (auto& slot : slots_) {
        uv_timer_stop(&slot.respawn_timer);
        if (slot.pid > 0) kill(slot.pid, SIGTERM);
    }
    uv_timer_start(&shutdown_timer_, on_shutdown_timeout, static_cast<uint64_t>(runtime_.config.shutdown_timeout_ms),
                   0);
    finish_if_done();
}

void Master::on_shutdown_timeout(uv_timer_t* timer) {
    auto& master = *static_cast<Master*>(timer->data);
    spdlog::warn("shutdown_timeout reached: stopping the remaining workers now");
    for (auto& slot : master.slots_)
        if (slot.pid > 0) kill(slot.pid, SIGKILL);
}

void Master::finish_if_done() {
    if (!stopping_ || finished_) return;
    if (std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.pid > 0; })) return;
    // The collector goes last: every record of the workers is in its socket by now.
    if (collector_.pid > 0) {
        if (!collector_stopping_) kill(collector_.pid, SIGTERM);
        collector_stopping_ = true;
        return;
    }
    finished_ = true;  // a second SIGCHLD read in the same turn must not close the handles again
    uv_close(reinterpret_cast<uv_handle_t*>(&signal_poll_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&collector_.respawn_timer), nullptr);
    for (auto& slot : slots_) uv_close(reinterpret_cast<uv_handle_t*>(&slot.respawn_timer), nullptr);
}

}  // namespace smp
