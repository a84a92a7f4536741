#include "collector.hpp"

#include <malloc.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <system_error>
#include <utility>
#include <vector>

#include "log.hpp"
#include "stop_signals.hpp"

namespace smp {
namespace {

constexpr uint64_t kTickMs = 1000;
constexpr int kReceiveBatch = 256;
// A running request reports its progress every second while bytes move, and
// a stalled one ends at its protocol's send or read timeout (60 s by
// default). One not heard of for ten times that lost its close record.
constexpr uint64_t kSilentRequestMs = 10 * 60 * 1000;
constexpr uint64_t kWarningEveryMs = 60 * 1000;
// After a burst of at least this many records, the first quiet second hands
// the memory its batches used back to the system.
constexpr uint64_t kTrimAfterRecords = 10'000;

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// Start-up errors are exceptions, caught where the collector is started.
void check_uv(int result, const char* doing) {
    if (result < 0) throw std::system_error(-result, std::generic_category(), fmt::format("cannot {}", doing));
}

// A download's id comes from the place of its first record in its worker's
// log, so that a replay after a crash gives the same id. A record from no
// log (one the collector made up) gets the collector's start time in
// microseconds plus its count of records: unique, as a restarted collector
// starts later.
uint64_t download_id(const smp_record& record, uint64_t origin_us, uint64_t records) {
    const uint64_t from_log = download_id_from_log(record);
    return from_log != 0 ? from_log : origin_us + records;
}

}  // namespace

std::string describe_download(const LogicalDownload& d, const GeoInfo& geo) {
    const double active_s = static_cast<double>(d.active_us()) / 1e6;
    std::string text = fmt::format(
        "Download finished: \"/{}\" for {} \"{}\": {}, {:.1f}% of {} bytes, {} request(s), {} resume(s), "
        "{} wasted byte(s), {:.3f} s active, {:.1f} MiB/s",
        d.path.view(), d.client_ip.view(), d.user_agent.view(), smp_end_reason_name(d.reason()), d.coverage() * 100.0,
        d.file_size, d.requests, d.resumes, d.wasted_bytes(), active_s, d.average_speed() / (1024.0 * 1024.0));
    if (!geo.country.empty() || !geo.city.empty()) text += fmt::format(", from {} {}", geo.country, geo.city);
    if (geo.has_location) text += fmt::format(" ({:.4f}, {:.4f})", geo.latitude, geo.longitude);
    if (geo.asn != 0) text += fmt::format(", AS{} \"{}\"", geo.asn, geo.organisation);
    return text;
}

InFlightRequests::Key InFlightRequests::key_of(const DecodedRecord& decoded) {
    return {decoded.pid, decoded.record().connection_id, decoded.record().request_id};
}

void InFlightRequests::update(DecodedRecord&& transfer, uint64_t now_ms) {
    Entry& entry = entries_[key_of(transfer)];
    entry.last = std::move(transfer);
    entry.heard_ms = now_ms;
    if (IntrusiveList<Entry, &Entry::by_heard>::contains(&entry))
        by_heard_.move_to_back(&entry);
    else
        by_heard_.push_back(&entry);
}

void InFlightRequests::erase(const DecodedRecord& close) {
    auto it = entries_.find(key_of(close));
    if (it == entries_.end()) return;
    by_heard_.remove(&it->second);
    entries_.erase(it);
}

void InFlightRequests::take(std::map<Key, Entry>::iterator it, const Lost& lost) {
    by_heard_.remove(&it->second);
    lost(it->second.last);
    entries_.erase(it);
}

void InFlightRequests::take_worker(uint32_t pid, const Lost& lost) {
    for (auto it = entries_.lower_bound({pid, 0, 0}); it != entries_.end() && std::get<0>(it->first) == pid;)
        take(it++, lost);
}

size_t InFlightRequests::take_silent(uint64_t before_ms, const Lost& lost) {
    size_t taken = 0;
    for (Entry* oldest = by_heard_.front(); oldest != nullptr && oldest->heard_ms < before_ms;
         oldest = by_heard_.front(), ++taken)
        take(entries_.find(key_of(oldest->last)), lost);
    return taken;
}

void InFlightRequests::take_all(const Lost& lost) {
    while (!entries_.empty()) take(entries_.begin(), lost);
}

uint64_t Collector::Throttled::due(uint64_t count, uint64_t now_ms) {
    if (count == said || (ever && now_ms - said_at_ms < kWarningEveryMs)) return 0;
    const uint64_t since = count - said;
    said = count;
    said_at_ms = now_ms;
    ever = true;
    return since;
}

Collector::Collector(Runtime& runtime, int socket_fd)
    : runtime_(runtime),
      fd_(socket_fd),
      tracker_(runtime.config.tracking.idle_window_ms * 1000,
               static_cast<size_t>(runtime.config.tracking.max_open_downloads)),
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
    check_uv(uv_loop_init(&loop_), "make the stats collector's event loop");
    signal_fd_ = watch_stop_signals(&loop_, &signal_poll_, this, on_signal);
    check_uv(uv_poll_init_socket(&loop_, &poll_, fd_), "watch the records socket");
    poll_.data = this;
    check_uv(uv_poll_start(&poll_, UV_READABLE, on_readable), "watch the records socket");
    check_uv(uv_timer_init(&loop_, &tick_), "make the stats collector's timer");
    tick_.data = this;
    check_uv(uv_timer_start(&tick_, on_tick, kTickMs, kTickMs), "start the stats collector's timer");
    start_stores();
    spdlog::info("Stats collector ready: downloads end after {} s idle; at most {} open",
                 runtime_.config.tracking.idle_window_ms / 1000, runtime_.config.tracking.max_open_downloads);

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
    if (decoded.kind == RecordKind::transfer) {
        in_flight_.update(std::move(decoded), uv_now(&loop_));
        return;
    }
    ++records_;
    in_flight_.erase(decoded);
    tracker_.add(decoded.record(), download_id(decoded.record(), origin_, records_));
    if (!storage_.empty()) batch_.records.push_back(std::move(decoded));
}

void Collector::close_requests_of(uint32_t pid) {
    in_flight_.take_worker(pid, [this](DecodedRecord& last) { close_lost(last, SMP_END_WORKER_LOST); });
}

void Collector::close_lost(DecodedRecord& last, smp_end_reason reason) {
    // The last progress reported is all that is known of a request whose end
    // never came: it ends there, worker_lost when its worker died, else
    // record_lost.
    last.set_reason(reason);
    ++records_;
    tracker_.add(last.record(), download_id(last.record(), origin_, records_));
    if (!storage_.empty()) batch_.records.push_back(std::move(last));
}

void Collector::close_silent_requests() {
    // Its worker is alive, or the master would have said so: the datagram
    // with its close record was dropped while this process fell behind.
    const uint64_t now_ms = uv_now(&loop_);
    if (now_ms > kSilentRequestMs)
        silent_closed_ += in_flight_.take_silent(
            now_ms - kSilentRequestMs, [this](DecodedRecord& last) { close_lost(last, SMP_END_RECORD_LOST); });
    if (const uint64_t closed = silent_warning_.due(silent_closed_, now_ms))
        spdlog::warn(
            "{} running request(s) not heard of for {} min closed with reason record_lost: their end was lost while "
            "the stats collector fell behind ({} so far)",
            closed, kSilentRequestMs / 60'000, silent_closed_);
}

void Collector::report_finished_early() {
    if (const uint64_t early = cap_warning_.due(tracker_.finished_early(), uv_now(&loop_)))
        spdlog::warn("open downloads at the cap ({}): finishing the oldest early ({} in the last minute, {} so far)",
                     tracker_.max_open(), early, tracker_.finished_early());
}

void Collector::on_tick(uv_timer_t* timer) {
    auto& self = *static_cast<Collector*>(timer->data);
    self.close_silent_requests();
    self.report_finished_early();
    self.trim_after_burst();
    self.tracker_.expire(now_us(), [&](const LogicalDownload& d) { self.finish(d); });
    if (!self.storage_.empty()) {
        // Stores show downloads as they grow: each second, the ones a request joined.
        self.tracker_.each_changed([&](const LogicalDownload& d) {
            self.batch_.downloads.emplace_back(d, self.geoip_.lookup(std::string(d.client_ip)), false);
        });
    }
    self.hand_to_stores();
}

void Collector::trim_after_burst() {
    // The batches of a burst (a crawler, an attack) leave freed memory that
    // malloc keeps; once quiet, the collector's size is its open downloads again.
    const uint64_t arrived = records_ - records_at_tick_;
    records_at_tick_ = records_;
    if (arrived > 0) {
        records_since_trim_ += arrived;
        return;
    }
    if (records_since_trim_ < kTrimAfterRecords) return;
    records_since_trim_ = 0;
    malloc_trim(0);
}

void Collector::finish(const LogicalDownload& download) {
    ++downloads_;
    const bool logged = spdlog::should_log(spdlog::level::info);
    // Looked up only when used: at full load there are thousands a second.
    if (!logged && storage_.empty()) return;
    GeoInfo geo = geoip_.lookup(std::string(download.client_ip));
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
    in_flight_.take_all([this](DecodedRecord& last) { close_lost(last, SMP_END_WORKER_LOST); });
    tracker_.expire(INT64_MAX, [&](const LogicalDownload& d) { finish(d); });
    stop_stores();
    for (auto* handle : {reinterpret_cast<uv_handle_t*>(&poll_), reinterpret_cast<uv_handle_t*>(&tick_),
                         reinterpret_cast<uv_handle_t*>(&signal_poll_)})
        uv_close(handle, nullptr);
    ::close(signal_fd_);
}

}  // namespace smp
