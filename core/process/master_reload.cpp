// A reload (SIGHUP): a new generation of workers starts beside the running
// one and is committed once every new worker is ready to accept, or aborted;
// the generation that leaves retires, finishing its running exchanges.
#include "master.hpp"

#include <signal.h>

#include <memory>
#include <string>
#include <utility>

namespace smp {
namespace {

// What the stats collector was built from: when a reload changes none of
// it, the running collector is kept, with its open downloads.
std::string collector_signature(const Runtime& runtime) {
    const Config& config = runtime.config;
    if (!config.tracking.enabled) return {};
    std::string text = fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}", config.tracking.idle_window_ms,
                                   config.tracking.max_open_downloads, config.state_dir, config.user,
                                   config.geoip.city_db, config.geoip.asn_db, config.log.file,
                                   static_cast<int>(config.log.level), config.module_dir, config.tracking.retention_ms,
                                   config.tracking.checkpoint_interval_ms, config.tracking.checkpoint_pause_ms);
    // The client class rules: a reload that changes the file (or names
    // another) restarts the collector with them.
    text += "|" + config.tracking.client_class_rules->text();
    for (const auto& module : runtime.modules)
        if (SMP_MODULE_HOOK(module->api, store) != nullptr)
            text += "|" + module->object->path() + "|" + YAML::Dump(module->entry->node);
    return text;
}

}  // namespace

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
    name_metrics(*incoming_);
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

}  // namespace smp
