#include "worker.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "download_key.hpp"
#include "loader.hpp"
#include "stop_signals.hpp"

namespace smp {
namespace {

// Connections taken from one listener per wake-up: enough to drain a burst,
// few enough that one busy listener does not starve the others.
constexpr int kAcceptBatch = 64;
constexpr uint64_t kAcceptPauseMs = 100;
// Connections the protocol modules are asked to close when the worker is
// full and a client waits in the backlog (nginx drains 32 at a time).
constexpr int kReclaimBatch = 32;
// privacy.anonymize_ip: the places of this many client addresses are kept.
constexpr size_t kPlaceCacheSize = 256;

Worker* self(smp_worker* worker) { return reinterpret_cast<Worker*>(worker); }

void api_log(smp_log_level level, const char* module, const char* message) {
    spdlog::log(to_spdlog(level), "[{}] {}", module ? module : "?", message ? message : "");
}

int api_log_enabled(smp_log_level level) { return spdlog::should_log(to_spdlog(level)) ? 1 : 0; }

void api_transfer(smp_worker* worker, const smp_record* record) { self(worker)->transfer(*record); }
void api_close(smp_worker* worker, const smp_record* record) { self(worker)->close(*record); }
void api_disconnect(smp_worker* worker, const smp_connection_info* info) { self(worker)->disconnect(*info); }

int api_trusted_proxy(smp_worker* worker, const char* ip) { return self(worker)->trusted_proxy(ip) ? 1 : 0; }

int api_limit_acquire(smp_worker* worker, const char* key, uint32_t limit, uint32_t ttl_s) {
    return self(worker)->limit_acquire(key, limit, ttl_s);
}
void api_limit_release(smp_worker* worker, const char* key) { self(worker)->limit_release(key); }
int api_limit_acquire_async(smp_worker* worker, const char* key, uint32_t limit, uint32_t ttl_s, smp_async_done done,
                            void* data, smp_async** call) {
    return self(worker)->limit_acquire_async(key, limit, ttl_s, done, data, call);
}
void api_limit_cancel(smp_worker* worker, smp_async* call) { self(worker)->limit_cancel(call); }

uint64_t api_cache_max_size(smp_worker* worker) { return self(worker)->cache_max_size(); }
int api_cache_get(smp_worker* worker, const char* key, void* buffer, uint64_t size) {
    return self(worker)->cache_get(key, buffer, size);
}
void api_cache_set(smp_worker* worker, const char* key, const void* data, uint64_t size) {
    self(worker)->cache_set(key, data, size);
}
int api_cache_get_async(smp_worker* worker, const char* key, void* buffer, uint64_t size, smp_async_done done,
                        void* data, smp_async** call) {
    return self(worker)->cache_get_async(key, buffer, size, done, data, call);
}
void api_cache_cancel(smp_worker* worker, smp_async* call) { self(worker)->cache_cancel(call); }

void api_config_warning(const char* message) { config_warning(message); }

void api_connection_phase(smp_worker* worker, smp_connection_phase from, smp_connection_phase to) {
    self(worker)->connection_phase(from, to);
}
void api_counters(smp_worker* /*worker*/, smp_counters* counters) {
    smp_counters all{};
    all.size = std::min<uint32_t>(counters->size, sizeof all);  // what the caller's struct holds
    if (const WorkerBoard* board = the_worker_board(); board != nullptr) board->counters(all);
    std::memcpy(counters, &all, all.size);
}
size_t api_metrics_text(smp_worker* worker, char* buffer, size_t size) {
    const std::string text = self(worker)->metrics_text();
    if (size > 0) {
        const size_t n = std::min(text.size(), size - 1);
        std::memcpy(buffer, text.data(), n);
        buffer[n] = '\0';
    }
    return text.size();
}
int api_query_async(smp_worker* worker, const smp_query* query, smp_query_done done, void* data, smp_async** call) {
    return self(worker)->query_async(*query, done, data, call);
}
void api_query_cancel(smp_worker* worker, smp_async* call) { self(worker)->query_cancel(call); }
void api_plugin_error(smp_worker* worker, const char* module) { self(worker)->plugin_error(module); }

constexpr smp_core_api kCoreApi{sizeof(smp_core_api),
                                api_log,
                                api_log_enabled,
                                api_transfer,
                                api_close,
                                api_disconnect,
                                api_trusted_proxy,
                                api_limit_acquire,
                                api_limit_release,
                                api_cache_max_size,
                                api_cache_get,
                                api_cache_set,
                                sizeof(smp_config_value),
                                api_limit_acquire_async,
                                api_cache_get_async,
                                api_limit_cancel,
                                api_cache_cancel,
                                api_config_warning,
                                api_connection_phase,
                                api_metrics_text,
                                api_query_async,
                                api_query_cancel,
                                api_plugin_error,
                                api_counters};

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// Text address and port of a socket address.
uint16_t describe(const sockaddr_storage& address, char* text, size_t size) {
    if (address.ss_family == AF_INET6) {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
        inet_ntop(AF_INET6, &in6.sin6_addr, text, static_cast<socklen_t>(size));
        return ntohs(in6.sin6_port);
    }
    const auto& in4 = reinterpret_cast<const sockaddr_in&>(address);
    inet_ntop(AF_INET, &in4.sin_addr, text, static_cast<socklen_t>(size));
    return ntohs(in4.sin_port);
}

}  // namespace

const smp_core_api& core_api() { return kCoreApi; }

// A configuration names one plugin with counters and one with a cache: the
// first of each is asked, and told of every release.
int Worker::limit_acquire(const char* key, uint32_t limit, uint32_t ttl_s) {
    if (counters_ == nullptr) return -1;
    auto acquire = SMP_MODULE_HOOK(counters_->api, counter_acquire);
    return acquire != nullptr ? acquire(counters_->worker_state, key, limit, ttl_s) : -1;
}

int Worker::limit_acquire_async(const char* key, uint32_t limit, uint32_t ttl_s, smp_async_done done, void* data,
                                smp_async** call) {
    if (counters_ == nullptr) return -1;
    if (auto acquire = SMP_MODULE_HOOK(counters_->api, counter_acquire_async))
        return acquire(counters_->worker_state, key, limit, ttl_s, done, data, call);
    return limit_acquire(key, limit, ttl_s);
}

void Worker::limit_cancel(smp_async* call) {
    if (counters_ != nullptr) counters_->api->cancel_async(counters_->worker_state, call);
}

void Worker::limit_release(const char* key) {
    if (counters_ != nullptr) counters_->api->counter_release(counters_->worker_state, key);
}

uint64_t Worker::cache_max_size() const {
    return cache_ != nullptr ? cache_->api->cache_max_size(cache_->worker_state) : 0;
}

int Worker::cache_get(const char* key, void* buffer, uint64_t size) {
    if (cache_ == nullptr) return -1;
    auto get = SMP_MODULE_HOOK(cache_->api, cache_get);
    return get != nullptr ? get(cache_->worker_state, key, buffer, size) : -1;
}

int Worker::cache_get_async(const char* key, void* buffer, uint64_t size, smp_async_done done, void* data,
                            smp_async** call) {
    if (cache_ == nullptr) return -1;
    if (auto get = SMP_MODULE_HOOK(cache_->api, cache_get_async))
        return get(cache_->worker_state, key, buffer, size, done, data, call);
    return cache_get(key, buffer, size);
}

void Worker::cache_cancel(smp_async* call) {
    if (cache_ != nullptr) cache_->api->cancel_async(cache_->worker_state, call);
}

void Worker::cache_set(const char* key, const void* data, uint64_t size) {
    if (cache_ != nullptr) cache_->api->cache_set(cache_->worker_state, key, data, size);
}

Worker::Worker(Runtime& runtime, int slot, WorkerSeat* seat, std::vector<std::optional<RecordLogWriter>> logs)
    : runtime_(runtime),
      slot_(slot),
      id_(static_cast<uint32_t>(slot + 1)),
      seat_(seat),
      logs_(std::move(logs)),
      pid_(static_cast<uint32_t>(getpid())) {
    if (WorkerBoard* board = the_worker_board(); board != nullptr && seat_ != nullptr)
        metrics_ = &board->metrics().worker(seat_->number);
    if (const PrivacyConfig& privacy = runtime_.config.privacy; privacy.anonymizes()) {
        shortener_.emplace(privacy.anonymize_ipv4_bits, privacy.anonymize_ipv6_bits);
        const GeoIpConfig& geo = runtime_.config.geoip;
        if (!logs_.empty() && (!geo.city_db.empty() || !geo.asn_db.empty())) {
            geoip_ = std::make_unique<GeoIp>(geo.city_db, geo.asn_db);
            places_.resize(kPlaceCacheSize);
        }
    }
}

// ---- privacy.anonymize_ip ----

const smp_record& Worker::outgoing(const smp_record& record, Outgoing& out) {
    if (!shortener_) return record;
    // A module built for an older ABI hands a smaller record: copy what it
    // has, the fields it lacks zero.
    out.record = smp_record{};
    std::memcpy(&out.record, &record, std::min<size_t>(record.size, sizeof out.record));
    const char* client = record.forwarded_ip != nullptr ? record.forwarded_ip : record.client_ip;
    if (geoip_ != nullptr && client != nullptr) out.geo = place_of(client);
    out.record.client_ip = shortener_->shorten(record.client_ip, out.client);
    out.record.forwarded_ip = shortener_->shorten(record.forwarded_ip, out.forwarded);
    return out.record;
}

const char* Worker::place_of(const char* address) {
    auto& [cached, place] = places_[std::hash<std::string_view>{}(address) % places_.size()];
    if (cached != address || place.empty()) {
        cached = address;
        place = encode_geo(geoip_->lookup(cached));
    }
    return place.c_str();
}

const smp_connection_info& Worker::for_plugins(const smp_connection_info& info, smp_connection_info& copy,
                                               AddressShortener::Text& client) const {
    if (!shortener_) return info;
    std::memcpy(&copy, &info, std::min<size_t>(info.size, sizeof copy));
    copy.client_ip = shortener_->shorten(info.client_ip, client);
    return copy;
}

int Worker::run() {
    if (int error = uv_loop_init(&loop_); error != 0) {
        spdlog::error("cannot create the event loop: {}", uv_strerror(error));
        return 1;
    }
    signal_fd_ = watch_stop_signals(&loop_, &signal_poll_, this, on_signal);

    smp_worker_context context{sizeof(smp_worker_context), &loop_, reinterpret_cast<smp_worker*>(this), id_,
                               runtime_.node.c_str()};
    for (auto& module : runtime_.modules) {
        if (module->api->kind == SMP_MODULE_PLUGIN) {
            plugins_.push_back(module.get());
            // The loader checked that the hooks of each come together.
            if (counters_ == nullptr && SMP_MODULE_HOOK(module->api, counter_release) != nullptr)
                counters_ = module.get();
            if (cache_ == nullptr && SMP_MODULE_HOOK(module->api, cache_max_size) != nullptr) cache_ = module.get();
            if (reports_ == nullptr && SMP_MODULE_HOOK(module->api, query) != nullptr) reports_ = module.get();
        }
        if (module->api->init_worker == nullptr) continue;
        std::array<char, 512> message{};
        if (module->api->init_worker(module->instance, &context, &module->worker_state, message.data(),
                                     message.size()) != SMP_OK) {
            spdlog::error("module '{}' failed to start in worker {}: {}", module->entry->module, id_, message.data());
            return 1;
        }
    }
    for (const auto& listener : runtime_.listeners)
        for (int fd : listener.fds_for(slot_, runtime_.config.workers)) {
            auto watch = std::make_unique<Watch>();
            watch->worker = this;
            watch->listener = &listener;
            watch->fd = fd;
            note_bound_address(*watch);
            if (int error = uv_poll_init(&loop_, &watch->poll, watch->fd); error != 0)
                throw std::runtime_error("cannot watch listener " + listener.address + ": " + uv_strerror(error));
            watch->poll.data = watch.get();
            watches_.push_back(std::move(watch));
        }
    uv_timer_init(&loop_, &accept_pause_timer_);
    accept_pause_timer_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&accept_pause_timer_));
    // Unreferenced: buffered lines never keep a stopping loop alive, since
    // finish_if_drained writes them itself.
    uv_timer_init(&loop_, &access_log_timer_);
    access_log_timer_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&access_log_timer_));
    set_accepting(true);
    if (seat_ != nullptr) {
        // A reload retires the old workers once every new one is here.
        seat_->pid.store(getpid(), std::memory_order_relaxed);
        seat_->ready.store(1, std::memory_order_release);
    }

    uv_run(&loop_, UV_RUN_DEFAULT);

    // Stopped: let each module free its worker state and close its handles,
    // then run the loop once more so every close callback has run.
    for (auto& module : runtime_.modules)
        if (module->worker_state != nullptr && module->api->exit_worker != nullptr)
            module->api->exit_worker(module->worker_state);
    uv_run(&loop_, UV_RUN_DEFAULT);
    // A module that ended its exchanges in exit_worker logged them after
    // finish_if_drained's flush; the process leaves with _exit, which
    // writes nothing for us.
    runtime_.access_log.flush();
    if (int error = uv_loop_close(&loop_); error != 0)
        spdlog::warn("event loop closed with handles still open: {}", uv_strerror(error));
    spdlog::info("Worker stopped");
    return 0;
}

void Worker::set_accepting(bool accepting) {
    if (accepting == accepting_) return;
    accepting_ = accepting;
    for (auto& watch : watches_) {
        if (accepting)
            uv_poll_start(&watch->poll, UV_READABLE, on_acceptable);
        else
            uv_poll_stop(&watch->poll);
    }
}

void Worker::on_acceptable(uv_poll_t* handle, int status, int /*events*/) {
    auto& watch = *static_cast<Watch*>(handle->data);
    if (status < 0) {
        spdlog::warn("listener {}: {}", watch.listener->address, uv_strerror(status));
        return;
    }
    watch.worker->accept_from(watch);
}

void Worker::note_bound_address(Watch& watch) {
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    if (getsockname(watch.fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return;
    bool wildcard = true;
    if (bound.ss_family == AF_INET)
        wildcard = reinterpret_cast<const sockaddr_in&>(bound).sin_addr.s_addr == htonl(INADDR_ANY);
    else if (bound.ss_family == AF_INET6)
        wildcard = IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6&>(bound).sin6_addr);
    if (wildcard) return;
    watch.local = bound;
    watch.local_length = length;
}

void Worker::accept_from(Watch& watch) {
    for (int i = 0; i < kAcceptBatch && accepting_; ++i) {
        if (connections_ >= runtime_.config.max_connections) {
            // Full, and a client waits in the backlog: the protocol modules
            // close connections that are cheap to lose (idle ones, heads
            // still trickling in, slow readers), as nginx drains its reusable
            // connections; their closes end this loop turn and the client is
            // accepted on the next. With none to close, look again shortly.
            if (reclaim_connections() == 0) pause_accepting();
            return;
        }
        sockaddr_storage peer{};
        socklen_t peer_length = sizeof peer;
        const int fd =
            accept4(watch.fd, reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
            // Out of descriptors or memory: the listener stays readable, so
            // polling it now would spin. Pause accepting and retry shortly;
            // the connections wait in the backlog meanwhile.
            spdlog::warn("accept on {} failed: {}; pausing accepts for {} ms", watch.listener->address,
                         std::strerror(errno), kAcceptPauseMs);
            pause_accepting();
            return;
        }
        sockaddr_storage local = watch.local;
        socklen_t local_length = sizeof local;
        if (watch.local_length == 0 && getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) {
            // Only out of kernel memory: the connection cannot be described, so it is not served.
            spdlog::warn("getsockname on an accepted connection failed: {}; closing it", std::strerror(errno));
            ::close(fd);
            continue;
        }
        char client_ip[INET6_ADDRSTRLEN];
        char local_ip[INET6_ADDRSTRLEN];
        smp_connection_info info{};
        info.size = sizeof info;
        info.connection_id = next_connection_id_++;
        info.worker_id = id_;
        info.module = watch.listener->entry->module.c_str();
        info.client_port = describe(peer, client_ip, sizeof client_ip);
        info.client_ip = client_ip;
        info.local_port = describe(local, local_ip, sizeof local_ip);
        info.local_ip = local_ip;
        info.accepted_us = now_us();
        AddressShortener::Text logged{};
        info.logged_ip = shortener_ ? shortener_->shorten(client_ip, logged) : client_ip;

        smp_connection_info copy{};
        AddressShortener::Text shortened{};
        const smp_connection_info& shared = for_plugins(info, copy, shortened);
        bool refused = false;
        for (auto* plugin : plugins_)
            if (plugin->api->on_connection != nullptr &&
                plugin->api->on_connection(plugin->worker_state, &shared) == SMP_REFUSE)
                refused = true;
        if (refused) {
            spdlog::debug("Connection from {}:{} refused by a plugin", shared.client_ip, info.client_port);
            ::close(fd);
            for (auto* plugin : plugins_)
                if (plugin->api->on_disconnect != nullptr) plugin->api->on_disconnect(plugin->worker_state, &shared);
            continue;
        }
        spdlog::debug("Connection received from {} on port {}", shared.client_ip, info.client_port);
        ++connections_;
        post_counts();
        const ModuleInstance& protocol = *watch.listener->protocol;
        protocol.api->accept(protocol.worker_state, fd, &info);
    }
}

int Worker::reclaim_connections() {
    int closing = 0;
    for (auto& module : runtime_.modules) {
        if (module->api->kind != SMP_MODULE_PROTOCOL || module->worker_state == nullptr) continue;
        if (auto reclaim = SMP_MODULE_HOOK(module->api, reclaim))
            closing += reclaim(module->worker_state, kReclaimBatch - closing);
        if (closing >= kReclaimBatch) break;
    }
    return closing;
}

// The listener stays readable, so polling it now would spin.
void Worker::pause_accepting() {
    set_accepting(false);
    uv_timer_start(&accept_pause_timer_, on_accept_pause_end, kAcceptPauseMs, 0);
}

void Worker::on_accept_pause_end(uv_timer_t* timer) {
    auto& worker = *static_cast<Worker*>(timer->data);
    if (!worker.stopping_) worker.set_accepting(true);
}

uint64_t Worker::dropped() const {
    uint64_t dropped = 0;
    for (const auto& log : logs_)
        if (log) dropped += log->dropped();
    return dropped;
}

void Worker::record(const smp_record& record, RecordKind kind, const char* geo) {
    if (logs_.empty()) return;  // tracking is off
    // Every request of a download goes to the same collector.
    auto& log = logs_.size() == 1 ? logs_[0] : logs_[hash_of(download_key(record)) % logs_.size()];
    if (!log) {
        ++dropped_without_log_;
        return;
    }
    if (log->append(record, kind, pid_, geo)) {
        if (log_full_) {
            log_full_ = false;
            spdlog::warn("tracking log has room again: {} record(s) dropped in this episode, {} in all",
                         dropped() - dropped_before_, dropped());
        }
        return;
    }
    // Never wait for the collector: a full log loses the record, counts it
    // (the stats report the count), and says so once per episode.
    if (!log_full_) {
        log_full_ = true;
        dropped_before_ = dropped() - 1;
        spdlog::warn("tracking log full: dropping records until the stats collector catches up (log {})",
                     log->number());
    }
}

void Worker::post_counts() {
    if (seat_ == nullptr) return;
    seat_->connections.store(connections_, std::memory_order_relaxed);
    seat_->downloads.store(static_cast<int64_t>(downloads_.size()), std::memory_order_relaxed);
}

void Worker::transfer(const smp_record& record) {
    // At most one progress record a second per response: the map costs
    // nothing on the short requests that never report one.
    const auto [running, started] = downloads_.try_emplace({record.connection_id, record.request_id}, 0);
    if (started) post_counts();
    // The bytes go into the metrics as they are sent, so that a long
    // download's bandwidth shows while it runs, not all at its end.
    const uint64_t sent = record.header_bytes + record.body_bytes;
    if (metrics_ != nullptr && sent > running->second) {
        metrics::add(metrics_->sent_bytes[module_place(record.module)], sent - running->second);
        running->second = sent;
    }
    Outgoing out;
    const smp_record& shared = outgoing(record, out);
    this->record(shared, RecordKind::transfer, out.geo);
    for (auto* plugin : plugins_)
        if (plugin->api->on_transfer != nullptr) plugin->api->on_transfer(plugin->worker_state, &shared);
}

void Worker::close(const smp_record& record) {
    uint64_t counted = 0;  // sent bytes its progress reports already counted
    if (!downloads_.empty())
        if (const auto running = downloads_.find({record.connection_id, record.request_id});
            running != downloads_.end()) {
            counted = running->second;
            downloads_.erase(running);
            post_counts();
        }
    if (metrics_ != nullptr) {
        using namespace metrics;
        const size_t module = module_place(record.module);
        const auto reason = std::min<size_t>(static_cast<size_t>(record.reason), kReasons - 1);
        add(metrics_->requests[module][status_class(record.status)][reason]);
        const uint64_t sent = record.header_bytes + record.body_bytes;
        add(metrics_->sent_bytes[module], sent > counted ? sent - counted : 0);
        add(metrics_->received_bytes[module], smp_record_received_bytes(&record));
        metrics_->request_duration.observe(record.end_us - record.start_us);
    }
    Outgoing out;
    const smp_record& shared = outgoing(record, out);
    runtime_.access_log.write(runtime_.config.privacy.access_log ? shared : record);
    start_access_log_timer();
    this->record(shared, RecordKind::close, out.geo);
    for (auto* plugin : plugins_)
        if (plugin->api->on_close != nullptr) plugin->api->on_close(plugin->worker_state, &shared);
}

// A record's module name is the module's own string: the same pointer
// record after record, so its place is looked up once per change.
size_t Worker::module_place(const char* module) {
    if (module != last_module_) {
        last_module_ = module;
        last_module_place_ = the_worker_board()->metrics().module_of(module);
    }
    return last_module_place_;
}

void Worker::connection_phase(smp_connection_phase from, smp_connection_phase to) {
    if (metrics_ == nullptr || from == to) return;
    if (from > SMP_PHASE_NONE && from <= SMP_PHASE_IDLE) metrics::add(metrics_->phases[from], -1);
    if (to > SMP_PHASE_NONE && to <= SMP_PHASE_IDLE) metrics::add(metrics_->phases[to], 1);
}

void Worker::plugin_error(const char* module) {
    if (metrics_ != nullptr) metrics::add(metrics_->plugin_errors[the_worker_board()->metrics().plugin_of(module)]);
}

std::string Worker::metrics_text() const {
    const WorkerBoard* board = the_worker_board();
    return board != nullptr ? board->prometheus_text() : std::string();
}

// Reports run one at a time, on a thread of libuv's pool: a store's query
// may take a while (SQLite reading its file, a round trip to MongoDB), and
// the store's tables are handed out one at a time.
int Worker::query_async(const smp_query& query, smp_query_done done, void* data, smp_async** call) {
    const bool live = query.report != nullptr && std::strcmp(query.report, "in_progress") == 0;
    if (reports_ == nullptr && !(live && the_worker_board() != nullptr)) return SMP_ERROR;
    auto* q = new Query;
    q->worker = this;
    q->work.data = q;
    q->report = query.report != nullptr ? query.report : "";
    q->path = query.path != nullptr ? query.path : "";
    q->bucket = SMP_HAS(&query, bucket) && query.bucket != nullptr ? query.bucket : "";
    q->query.size = sizeof q->query;
    q->query.report = q->report.c_str();
    q->query.since_us = query.since_us;
    q->query.until_us = query.until_us;
    q->query.path = query.path != nullptr ? q->path.c_str() : nullptr;
    q->query.bucket = q->bucket.empty() ? nullptr : q->bucket.c_str();
    q->query.include_bots = smp_query_include_bots(&query);
    q->done = done;
    q->data = data;
    queries_.push_back(q);
    *call = reinterpret_cast<smp_async*>(q);
    start_next_query();
    return SMP_PENDING;
}

void Worker::query_cancel(smp_async* call) {
    auto* q = reinterpret_cast<Query*>(call);
    const bool running = query_running_ && !queries_.empty() && queries_.front() == q;
    if (running) {
        q->cancelled = true;  // after_query drops its answer
        return;
    }
    std::erase(queries_, q);
    delete q;
}

void Worker::start_next_query() {
    if (query_running_ || queries_.empty()) return;
    query_running_ = true;
    if (int error = uv_queue_work(&loop_, &queries_.front()->work, run_query, after_query); error != 0) {
        queries_.front()->error = std::string("cannot run the report: ") + uv_strerror(error);
        after_query(&queries_.front()->work, error);
    }
}

void Worker::run_query(uv_work_t* work) {
    auto* q = static_cast<Query*>(work->data);
    if (q->report == "in_progress" && the_worker_board() != nullptr) {
        q->owned = live_downloads_table(the_worker_board()->metrics().live_downloads(), q->query);
        q->table = q->owned->finish();
        return;
    }
    const ModuleInstance& store = *q->worker->reports_;
    std::array<char, 512> error{};
    if (SMP_MODULE_HOOK(store.api, query)(store.instance, &q->query, &q->table, error.data(), error.size()) != SMP_OK) {
        q->table = nullptr;
        q->error = error[0] != '\0' ? error.data() : "the store failed to answer";
    }
}

void Worker::after_query(uv_work_t* work, int /*status*/) {
    auto* q = static_cast<Query*>(work->data);
    Worker& worker = *q->worker;
    worker.queries_.pop_front();
    worker.query_running_ = false;
    if (!q->cancelled) {
        if (q->table != nullptr)
            q->done(q->data, q->table, nullptr);
        else
            q->done(q->data, nullptr, q->error.empty() ? "the store failed to answer" : q->error.c_str());
    }
    if (q->table != nullptr && q->owned == nullptr)
        SMP_MODULE_HOOK(worker.reports_->api, free_table)(worker.reports_->instance, q->table);
    delete q;
    worker.start_next_query();
}

void Worker::disconnect(const smp_connection_info& info) {
    smp_connection_info copy{};
    AddressShortener::Text shortened{};
    const smp_connection_info& shared = for_plugins(info, copy, shortened);
    for (auto* plugin : plugins_)
        if (plugin->api->on_disconnect != nullptr) plugin->api->on_disconnect(plugin->worker_state, &shared);
    --connections_;
    post_counts();
    if (stopping_)
        finish_if_drained();
    else if (connections_ < runtime_.config.max_connections)
        set_accepting(true);
}

void Worker::on_signal(uv_poll_t* handle, int /*status*/, int /*events*/) {
    auto& worker = *static_cast<Worker*>(handle->data);
    signalfd_siginfo info{};
    while (read(worker.signal_fd_, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGQUIT) worker.begin_shutdown();
        if (info.ssi_signo == SIGUSR1) worker.reopen_logs();
    }
}

// Lines wait at most log.access_log_flush: the timer starts with the first
// line the buffer takes while empty, and an idle worker has none running.
void Worker::start_access_log_timer() {
    if (finished_ || !runtime_.access_log.has_buffered_lines() ||
        uv_is_active(reinterpret_cast<uv_handle_t*>(&access_log_timer_)))
        return;
    uv_timer_start(&access_log_timer_, on_access_log_timer,
                   static_cast<uint64_t>(runtime_.config.log.access_log_flush_ms), 0);
}

void Worker::on_access_log_timer(uv_timer_t* timer) { static_cast<Worker*>(timer->data)->runtime_.access_log.flush(); }

void Worker::reopen_logs() {
    // The master created the new files and gave them to this worker's user.
    if (auto problem = reopen_log_files(); !problem.empty()) spdlog::error("{}", problem);
    // reopen() writes the buffered lines to the old file first, so the timer
    // has nothing left to write.
    if (auto problem = runtime_.access_log.reopen(); !problem.empty()) spdlog::error("{}", problem);
    uv_timer_stop(&access_log_timer_);
}

void Worker::begin_shutdown() {
    if (stopping_) return;
    stopping_ = true;
    spdlog::info("Stopping: no new connections, {} open connection(s) finishing", connections_);
    set_accepting(false);
    // Past shutdown_timeout the master kills a worker that is still sending,
    // and its buffer with it: the few lines of the drain go out at once.
    runtime_.access_log.stop_buffering();
    uv_timer_stop(&access_log_timer_);
    for (auto& watch : watches_) {
        uv_close(reinterpret_cast<uv_handle_t*>(&watch->poll), nullptr);
        ::close(watch->fd);
    }
    for (auto& module : runtime_.modules)
        if (module->api->kind == SMP_MODULE_PROTOCOL) module->api->shutdown(module->worker_state);
    finish_if_drained();
}

void Worker::finish_if_drained() {
    if (finished_ || connections_ > 0) return;
    finished_ = true;
    if (dropped_without_log_ > 0)
        spdlog::warn("{} record(s) dropped: this worker had no tracking log", dropped_without_log_);
    runtime_.access_log.flush();
    uv_close(reinterpret_cast<uv_handle_t*>(&access_log_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&accept_pause_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&signal_poll_), nullptr);
    ::close(signal_fd_);
    uv_stop(&loop_);
}

}  // namespace smp
