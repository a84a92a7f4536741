#include "collector.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "log.hpp"
#include "stop_signals.hpp"

namespace smp {
namespace {

constexpr uint64_t kTickMs = 1000;
constexpr int kReceiveBatch = 256;

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string describe_download(const LogicalDownload& d, const GeoInfo& geo) {
    const double active_s = static_cast<double>(d.active_us()) / 1e6;
    std::string text = fmt::format(
        "Download finished: \"/{}\" for {} \"{}\": {}, {:.1f}% of {} bytes, {} request(s), {} resume(s), "
        "{} wasted byte(s), {:.3f} s active, {:.1f} MiB/s",
        d.path, d.client_ip, d.user_agent, smp_end_reason_name(d.reason()), d.coverage() * 100.0, d.file_size,
        d.requests, d.resumes, d.wasted_bytes(), active_s, d.average_speed() / (1024.0 * 1024.0));
    if (!geo.country.empty() || !geo.city.empty()) text += fmt::format(", from {} {}", geo.country, geo.city);
    if (geo.has_location) text += fmt::format(" ({:.4f}, {:.4f})", geo.latitude, geo.longitude);
    if (geo.asn != 0) text += fmt::format(", AS{} \"{}\"", geo.asn, geo.organisation);
    return text;
}

Collector::Collector(Runtime& runtime, int socket_fd)
    : runtime_(runtime),
      fd_(socket_fd),
      tracker_(runtime.config.tracking.idle_window_ms * 1000, static_cast<uint64_t>(now_us())),
      geoip_(runtime.config.geoip.city_db, runtime.config.geoip.asn_db),
      origin_(static_cast<uint64_t>(now_us())) {
    batch_.origin = origin_;
    batch_.sequence = 1;
}

void Collector::start_stores() {
    // A spool directory per store, named after its module (and its rank
    // among entries of the same module).
    std::map<std::string, int> seen;
    for (auto& module : runtime_.modules) {
        if (SMP_MODULE_HOOK(module->api, store) == nullptr) continue;
        const std::string& name = module->entry->module;
        const int rank = seen[name]++;
        const std::string dir =
            runtime_.config.state_dir + "/spool/" + name + (rank > 0 ? fmt::format("-{}", rank) : "");
        storage_.push_back(std::make_unique<StorageThread>(*module, dir));
    }
}

void Collector::hand_to_stores() {
    if (storage_.empty() || batch_.empty()) return;
    Batch next;
    next.origin = origin_;
    next.sequence = batch_.sequence + 1;
    next.records.reserve(batch_.records.size());  // the next second is likely as busy as this one
    auto batch = std::make_shared<const Batch>(std::exchange(batch_, std::move(next)));
    for (auto& storage : storage_) storage->submit(batch);
}

void Collector::stop_stores() {
    hand_to_stores();
    for (auto& storage : storage_) storage->stop();
}

int Collector::run() {
    start_stores();
    uv_loop_init(&loop_);
    signal_fd_ = watch_stop_signals(&loop_, &signal_poll_, this, on_signal);
    uv_poll_init(&loop_, &poll_, fd_);
    poll_.data = this;
    uv_poll_start(&poll_, UV_READABLE, on_readable);
    uv_timer_init(&loop_, &tick_);
    tick_.data = this;
    uv_timer_start(&tick_, on_tick, kTickMs, kTickMs);
    spdlog::info("Stats collector ready: downloads end after {} s idle",
                 runtime_.config.tracking.idle_window_ms / 1000);

    uv_run(&loop_, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop_) != 0) spdlog::warn("event loop closed with handles still open");
    spdlog::info("Stats collector stopped: {} record(s), {} download(s), {} malformed datagram(s)", records_,
                 downloads_, malformed_);
    return 0;
}

void Collector::on_readable(uv_poll_t* handle, int /*status*/, int /*events*/) {
    static_cast<Collector*>(handle->data)->receive();
}

int Collector::receive() {
    std::array<char, kMaxBatchBytes> buffer;
    int received = 0;
    for (; received < kReceiveBatch; ++received) {
        const ssize_t n = recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n < 0) break;  // EAGAIN: drained
        const std::string_view data(buffer.data(), static_cast<size_t>(n));
        CollectorNotice notice;
        if (data.size() == sizeof notice) {
            std::memcpy(&notice, data.data(), sizeof notice);
            if (notice.magic == CollectorNotice::kMagic) {
                close_requests_of(notice.lost_pid);
                continue;
            }
        }
        if (!DecodedRecord::for_each(data, [this](DecodedRecord&& decoded) { handle(std::move(decoded)); }))
            ++malformed_;
    }
    return received;
}

void Collector::handle(DecodedRecord&& decoded) {
    const smp_record& record = decoded.record();
    const RequestKey key{decoded.pid, record.connection_id, record.request_id};
    if (decoded.kind == RecordKind::transfer) {
        in_flight_[key] = std::move(decoded);
        return;
    }
    ++records_;
    in_flight_.erase(key);
    tracker_.add(record);
    if (!storage_.empty()) batch_.records.push_back(std::move(decoded));
}

void Collector::close_requests_of(uint32_t pid) {
    // The last progress a dead worker reported is all that is known of its
    // running requests: they end there, with reason worker_lost.
    for (auto it = in_flight_.lower_bound({pid, 0, 0}); it != in_flight_.end() && std::get<0>(it->first) == pid;) {
        DecodedRecord& lost = it->second;
        lost.set_reason(SMP_END_WORKER_LOST);
        ++records_;
        tracker_.add(lost.record());
        if (!storage_.empty()) batch_.records.push_back(lost);
        it = in_flight_.erase(it);
    }
}

void Collector::on_tick(uv_timer_t* timer) {
    auto& self = *static_cast<Collector*>(timer->data);
    self.tracker_.expire(now_us(), [&](const LogicalDownload& d) { self.finish(d); });
    if (!self.storage_.empty()) {
        // Stores show downloads as they grow: each second, the ones a request joined.
        self.tracker_.each_changed([&](const LogicalDownload& d) {
            self.batch_.downloads.emplace_back(d, self.geoip_.lookup(d.client_ip), false);
        });
    }
    self.hand_to_stores();
}

void Collector::finish(const LogicalDownload& download) {
    ++downloads_;
    const bool logged = spdlog::should_log(spdlog::level::info);
    // Looked up only when used: at full load there are thousands a second.
    if (!logged && storage_.empty()) return;
    GeoInfo geo = geoip_.lookup(download.client_ip);
    if (logged) spdlog::info("{}", describe_download(download, geo));
    if (!storage_.empty()) batch_.downloads.emplace_back(download, std::move(geo), true);
}

void Collector::on_signal(uv_poll_t* handle, int /*status*/, int /*events*/) {
    auto& self = *static_cast<Collector*>(handle->data);
    signalfd_siginfo info{};
    while (read(self.signal_fd_, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo != SIGUSR1) {
            self.stop();
        } else if (auto problem = reopen_log_files(); !problem.empty()) {
            spdlog::error("{}", problem);
        }
    }
}

void Collector::stop() {
    if (stopping_) return;
    stopping_ = true;
    // The workers are gone (the master stops the collector last): what is in
    // the socket is all there will be.
    while (receive() == kReceiveBatch) {
    }
    for (auto it = in_flight_.begin(); it != in_flight_.end(); it = in_flight_.begin())
        close_requests_of(std::get<0>(it->first));
    tracker_.expire(INT64_MAX, [&](const LogicalDownload& d) { finish(d); });
    stop_stores();
    for (auto* handle : {reinterpret_cast<uv_handle_t*>(&poll_), reinterpret_cast<uv_handle_t*>(&tick_),
                         reinterpret_cast<uv_handle_t*>(&signal_poll_)})
        uv_close(handle, nullptr);
    ::close(signal_fd_);
}

}  // namespace smp
