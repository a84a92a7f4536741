// What every protocol module's worker does alike, from accept to close: a
// connection's socket, addresses and place in the worker's list; the limit
// on connections per client; the sweep and pace timers; a pool of buffers;
// the close that lets libuv go first; and the C hooks around a module's
// WorkerState. A module keeps only its own state machine (docs/design.md).
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "limits.hpp"
#include "response.hpp"
#include "smp_module.h"

namespace smp::protocol {

// The part of a connection that every module's has. `Connection` is the
// module's own type, which derives from ConnectionBase<Connection>.
template <typename Connection>
struct ConnectionBase {
    uv_poll_t poll{};
    int fd = -1;
    Connection* previous = nullptr;  // the worker's list of connections
    Connection* next = nullptr;
    int poll_events = 0;
    bool closing = false;
    uint64_t requests = 0;
    smp::http::Slot ip_slot;                              // max_connections_per_ip, held until close
    bool over_limit = false;                              // past max_connections_per_ip: the module refuses its request
    bool paused = false;                                  // waiting for its rate budget, in the worker's paused list
    smp_connection_phase metrics_phase = SMP_PHASE_NONE;  // what the metrics count it as (ABI 1.10)
    uint64_t resume_ms = 0;
    smp_connection_info info{};
    char client_ip[INET6_ADDRSTRLEN] = {};
    char logged_ip[INET6_ADDRSTRLEN] = {};  // what log lines show (privacy.anonymize_ip)
    char local_ip[INET6_ADDRSTRLEN] = {};
};

// How often the connections waiting for their rate budget are looked at.
constexpr uint64_t kPaceIntervalMs = 10;

// What the common part of accept needs of a module's settings.
struct AcceptSettings {
    const char* module = nullptr;         // the name records and log lines carry
    uint32_t max_connections_per_ip = 0;  // 0: no limit
    uint64_t notsent_lowat = 0;           // TCP_NOTSENT_LOWAT; 0: the kernel's
};

// A worker's state common to every module. `Connection` derives from
// ConnectionBase<Connection>. The module's WorkerState derives from this, and
// is freed by close_handles() once libuv has let go of the timers.
template <typename Connection>
class WorkerBase {
   public:
    WorkerBase(const smp_core_api* core, const smp_worker_context& context, smp::http::SharedCounters* counters,
               size_t buffer_size, uv_timer_cb on_sweep, uint64_t sweep_every_ms)
        : core_(core),
          loop_(context.loop),
          worker_(context.worker),
          worker_id_(context.worker_id),
          node_(context.node),
          buffer_size_(buffer_size) {
        uv_timer_init(loop_, &sweep_timer_);
        sweep_timer_.data = this;
        uv_timer_start(&sweep_timer_, on_sweep, sweep_every_ms, sweep_every_ms);
        // Not a reason to keep the loop alive: the loop ends with the last connection.
        uv_unref(reinterpret_cast<uv_handle_t*>(&sweep_timer_));
        // The module starts it only while a connection waits for its rate
        // budget, and then it keeps the loop running (that connection's poll
        // is stopped meanwhile).
        uv_timer_init(loop_, &pace_timer_);
        pace_timer_.data = this;
        if (counters != nullptr) slots_.emplace(core_, worker_, *counters);
    }
    virtual ~WorkerBase() {
        for (char* buffer : free_buffers_) delete[] buffer;
    }
    WorkerBase(const WorkerBase&) = delete;
    WorkerBase& operator=(const WorkerBase&) = delete;

    // Closes the worker's own handles; the state is freed when both timers
    // have closed, in whichever order libuv runs their callbacks.
    void close_handles() {
        const auto closed = [](uv_handle_t* handle) {
            auto* self = static_cast<WorkerBase*>(handle->data);
            if (--self->open_handles_ == 0) delete self;
        };
        uv_close(reinterpret_cast<uv_handle_t*>(&pace_timer_), closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), closed);
    }

    uv_loop_t* loop() const { return loop_; }

    // The module's WorkerState behind a timer's data.
    template <typename WorkerState>
    static WorkerState& of(uv_timer_t* timer) {
        return static_cast<WorkerState&>(*static_cast<WorkerBase*>(timer->data));
    }

   protected:
    // The common part of accepting `fd`: a new connection with its addresses
    // copied, TCP_NODELAY and TCP_NOTSENT_LOWAT set, its socket watched (on
    // `on_poll` once started), linked into the list, and counted against the
    // limit per client (a trusted proxy's clients are many, so it is not
    // counted). Null when it could not be watched: the descriptor is closed
    // and the core told. Throws std::bad_alloc after the same.
    //
    // The module sets the connection's `worker` and calls its own
    // start_connection(c) (which looks at over_limit) once the limit has
    // answered: at once unless ip_slot.waiting(); else the answer of the
    // plugins' shared counter calls it later, and the connection reads
    // nothing meanwhile.
    Connection* adopt(int fd, const smp_connection_info& info, const AcceptSettings& settings) {
        Connection* c = nullptr;
        try {
            c = new Connection;
        } catch (const std::bad_alloc&) {
            ::close(fd);
            core_->disconnect(worker_, &info);
            throw;
        }
        c->fd = fd;
        c->info = info;
        std::snprintf(c->client_ip, sizeof c->client_ip, "%s", info.client_ip);
        std::snprintf(c->logged_ip, sizeof c->logged_ip, "%s", smp_logged_ip(&info));
        std::snprintf(c->local_ip, sizeof c->local_ip, "%s", info.local_ip);
        c->info.client_ip = c->client_ip;
        c->info.logged_ip = c->logged_ip;
        c->info.local_ip = c->local_ip;
        c->info.module = settings.module;
        const int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        // A client that reads slowly (or not at all) holds at most this much
        // of the kernel's socket memory, not the few MiB autotuning would give
        // it: a thousand slow readers must not exhaust tcp_mem for everyone.
        if (settings.notsent_lowat > 0) {
            const int lowat = static_cast<int>(std::min<uint64_t>(settings.notsent_lowat, INT32_MAX));
            setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
        }
        if (const int error = uv_poll_init_socket(loop_, &c->poll, fd); error != 0) {
            // The handle was never made, so there is nothing for uv_close.
            const std::string message = std::string("cannot watch an accepted connection: ") + uv_strerror(error);
            core_->log(SMP_LOG_WARN, settings.module, message.c_str());
            ::close(fd);
            core_->disconnect(worker_, &c->info);
            delete c;
            return nullptr;
        }
        c->poll.data = c;
        set_phase(*c, SMP_PHASE_READING);
        c->next = connections_;
        if (connections_ != nullptr) connections_->previous = c;
        connections_ = c;
        if (settings.max_connections_per_ip > 0 && !trusted_proxy(c->client_ip)) {
            const uint64_t key = smp::http::limit_key("connections", c->client_ip);
            c->over_limit = slots_->acquire(c->ip_slot, key, settings.max_connections_per_ip, on_connection_slot, c) ==
                            smp::http::SlotAnswer::refused;
        }
        return c;
    }

    // Where `c` is for the server's metrics: reading a request, writing a
    // response, or idle between requests (connection_phase is ABI 1.10).
    void set_phase(Connection& c, smp_connection_phase phase) {
        if (c.metrics_phase == phase) return;
        if (SMP_HAS(core_, connection_phase)) core_->connection_phase(worker_, c.metrics_phase, phase);
        c.metrics_phase = phase;
    }

    // Whether `ip` is a trusted proxy (trusted_proxy is ABI 1.1).
    bool trusted_proxy(const char* ip) const {
        return SMP_HAS(core_, trusted_proxy) && core_->trusted_proxy(worker_, ip);
    }

    // The common part of closing `c`, after the module has ended its
    // exchange: out of the paused list, its slot given back, the debug line
    // ("Connection closed with message", then the module's `detail`),
    // unlinked now, and freed once libuv has let go of its poll.
    void release_and_close(Connection& c, smp_end_reason reason, const char* module, const char* detail = "") {
        set_phase(c, SMP_PHASE_NONE);
        if (c.paused) std::erase(paused_, &c);
        c.paused = false;
        if (slots_) slots_->release(c.ip_slot);
        if (core_->log_enabled(SMP_LOG_DEBUG)) {
            char message[240];
            std::snprintf(message, sizeof message, "Connection closed with message \"%s\" (%s:%u, %llu request(s)%s)",
                          smp_end_reason_name(reason), c.logged_ip, c.info.client_port,
                          static_cast<unsigned long long>(c.requests), detail);
            core_->log(SMP_LOG_DEBUG, module, message);
        }
        if (c.previous != nullptr) c.previous->next = c.next;
        if (c.next != nullptr) c.next->previous = c.previous;
        if (connections_ == &c) connections_ = c.next;
        uv_close(reinterpret_cast<uv_handle_t*>(&c.poll), on_closed);
    }

    // A record of `c` with what every module fills alike: the ids (a request
    // cut short before it was counted is the next one), the module, node,
    // times and client. The module adds what its exchange knows.
    smp_record new_record(const Connection& c, const char* module, bool request_counted, int64_t start_us,
                          smp_end_reason reason) const {
        smp_record record{};
        record.size = sizeof record;
        record.connection_id = c.info.connection_id;
        record.request_id = request_counted ? c.requests : c.requests + 1;
        record.worker_id = worker_id_;
        record.module = module;
        record.node = node_;
        record.start_us = start_us;
        record.end_us = wall_clock_us();
        record.client_ip = c.client_ip;
        record.client_port = c.info.client_port;
        record.file_size = -1;
        record.reason = reason;
        return record;
    }

    // Hands `record` to the core: the final one of an exchange, or a
    // progress report of one still running.
    void send_record(const smp_record& record, bool final) const {
        if (final)
            core_->close(worker_, &record);
        else
            core_->transfer(worker_, &record);
    }

    // The original daemon's info line for a completed 200/206 GET:
    // "File downloaded "/path" 200[ from origin], N bytes to ip:port in S s".
    void log_file_downloaded(const Connection& c, const char* module, std::string_view path, int status,
                             uint64_t body_bytes, int64_t start_us, std::string_view origin = {}) const {
        if (!core_->log_enabled(SMP_LOG_INFO)) return;
        const double seconds = static_cast<double>(wall_clock_us() - start_us) / 1e6;
        char message[512];
        std::snprintf(message, sizeof message, "File downloaded \"/%.*s\" %d%s%.*s, %llu bytes to %s:%u in %.3f s",
                      static_cast<int>(path.size()), path.data(), status, origin.empty() ? "" : " from ",
                      static_cast<int>(origin.size()), origin.data(), static_cast<unsigned long long>(body_bytes),
                      c.logged_ip, c.info.client_port, seconds);
        core_->log(SMP_LOG_INFO, module, message);
    }

    // Our side is done sending: the FIN goes out, and what the client still
    // sends is read and dropped for a while, so that closing does not reset
    // the connection before the client has read our last response.
    static void shut_write(Connection& c) { ::shutdown(c.fd, SHUT_WR); }

    // After the last response, whether the close must linger (shut_write,
    // then read and drop until the client closes): only when the client may
    // have sent bytes that were not read: `unread` (the module knows of some
    // still to come, e.g. a body it did not read), `buffered` in the
    // module's buffer, or some in TLS's or the socket's. A socket closed
    // with unread bytes resets the connection, which can destroy the
    // response before the client has read it; one closed with none sends
    // its FIN after the response. nginx's `lingering_close on` decides alike.
    static bool may_have_unread(const Connection& c, bool unread, size_t buffered) {
        if (unread || buffered > 0) return true;
        if (c.tls && c.tls->has_buffered_input()) return true;
        int queued = 0;
        return ioctl(c.fd, FIONREAD, &queued) != 0 || queued > 0;
    }

    // Parks `c` until `resume_ms`, when `on_pace` (the module's, run by the
    // pace timer) takes it from the paused list with take_resumable().
    void park(Connection& c, uint64_t resume_ms, uv_timer_cb on_pace) {
        c.paused = true;
        c.resume_ms = resume_ms;
        paused_.push_back(&c);
        if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&pace_timer_)))
            uv_timer_start(&pace_timer_, on_pace, kPaceIntervalMs, kPaceIntervalMs);
    }

    // The plugins' shared counters may still hold slots of workers that died
    // before this one started: given back on the first sweep, once the
    // plugins are up.
    void give_back_dead_holders_once() {
        if (gave_back_dead_holders_) return;
        gave_back_dead_holders_ = true;
        if (slots_) slots_->give_back_dead_holders();
    }

    // Buffers of buffer_size bytes, kept for the next connection.
    char* take_buffer() {
        if (free_buffers_.empty()) return new char[buffer_size_];
        char* buffer = free_buffers_.back();
        free_buffers_.pop_back();
        return buffer;
    }
    void give_buffer(char*& buffer) {
        if (buffer == nullptr) return;
        free_buffers_.push_back(buffer);
        buffer = nullptr;
    }
    size_t buffer_size() const { return buffer_size_; }

    const smp_core_api* core_;
    uv_loop_t* loop_;
    smp_worker* worker_;
    uint32_t worker_id_;
    const char* node_;
    std::optional<smp::http::Slots> slots_;  // when a limit is on
    uv_timer_t sweep_timer_{};
    uv_timer_t pace_timer_{};  // runs while connections wait for their rate budget
    std::vector<Connection*> paused_;
    Connection* connections_ = nullptr;
    bool stopping_ = false;
    DateCache dates_;  // the Date of the responses this worker writes

   private:
    // The shared counter's answer for a connection's max_connections_per_ip slot.
    static void on_connection_slot(void* data, int answer) {
        auto& c = *static_cast<Connection*>(data);
        WorkerBase& self = *c.worker;
        c.over_limit = self.slots_->answered(c.ip_slot, answer) == smp::http::SlotAnswer::refused;
        c.worker->start_connection(c);
    }

    static void on_closed(uv_handle_t* handle) {
        auto* c = static_cast<Connection*>(handle->data);
        WorkerBase& self = *c->worker;
        ::close(c->fd);
        // The info's addresses are the connection's own arrays: copied with
        // it, so that what the plugins read in on_disconnect outlives it.
        smp_connection_info info = c->info;
        char client_ip[INET6_ADDRSTRLEN], logged_ip[INET6_ADDRSTRLEN], local_ip[INET6_ADDRSTRLEN];
        std::memcpy(client_ip, c->client_ip, sizeof client_ip);
        std::memcpy(logged_ip, c->logged_ip, sizeof logged_ip);
        std::memcpy(local_ip, c->local_ip, sizeof local_ip);
        info.client_ip = client_ip;
        info.logged_ip = logged_ip;
        info.local_ip = local_ip;
        delete c;
        self.core_->disconnect(self.worker_, &info);
    }

    size_t buffer_size_;
    int open_handles_ = 2;  // the two timers, closed by close_handles
    bool gave_back_dead_holders_ = false;
    std::vector<char*> free_buffers_;
};

// The worker hooks of a protocol module, around its WorkerState (made from
// its Settings and the worker context): exceptions stop here, as the C
// boundary requires.
template <typename WorkerState, typename Settings>
struct WorkerHooks {
    static int init(void* instance, const smp_worker_context* context, void** worker_state, char* error,
                    size_t error_size) {
        try {
            *worker_state = new WorkerState(*static_cast<Settings*>(instance), *context);
            return SMP_OK;
        } catch (const std::exception& e) {
            std::snprintf(error, error_size, "%s", e.what());
            return SMP_ERROR;
        }
    }
    // The handles close first; the state is freed when the last one has.
    static void exit(void* worker_state) { static_cast<WorkerState*>(worker_state)->close_handles(); }
    static int accept(void* worker_state, int fd, const smp_connection_info* info) {
        try {
            static_cast<WorkerState*>(worker_state)->accept(fd, *info);
            return SMP_OK;
        } catch (...) {
            return SMP_ERROR;  // accept() closed the descriptor and told the core
        }
    }
    static void shutdown(void* worker_state) { static_cast<WorkerState*>(worker_state)->shutdown(); }
};

}  // namespace smp::protocol
