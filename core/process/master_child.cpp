// The child side of the master's forks: what a new worker or stats collector
// runs between fork and its own loop (closing what belongs to the master and
// to the other generations, dropping privileges), and then until it exits.
#include "master.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "collector.hpp"
#include "record_log.hpp"
#include "worker.hpp"

namespace smp {

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

}  // namespace smp
