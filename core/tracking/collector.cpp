#include "collector.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <system_error>
#include <utility>
#include <vector>

#include "download_key.hpp"
#include "log.hpp"
#include "stop_signals.hpp"
#include "worker_board.hpp"

namespace smp {
namespace {

constexpr uint64_t kTickMs = 1000;
// The logs are looked at this often; a backlog is read without waiting, at
// most this many records a loop turn, so that ticks and signals still run.
// Each look costs a wakeup and a switch of the CPU: looking each 50 ms
// rather than 10 took a quarter off the collector's CPU at 800 new TLS
// connections a second (a record is in no hurry: the stores get it at the
// next tick, each second).
constexpr uint64_t kPollMs = 50;
constexpr uint64_t kRecordsPerTurn = 20'000;
// The time of the last tick when the server stops: every download ends.
constexpr int64_t kEndOfTime = INT64_MAX;
// A download reaches the stores open only once it began this long ago: one
// that ends sooner (a small file, fetched again; docs/tracking.md) is stored
// once, when it ends, not once open and again finished.
constexpr int64_t kOpenRowAfterUs = 1'000'000;
// A running request reports its progress every second while bytes move, and
// a stalled one ends at its protocol's send or read timeout (60 s by
// default). One not heard of for ten times that lost its close record.
constexpr uint64_t kSilentRequestMs = 10 * 60 * 1000;
constexpr uint64_t kWarningEveryMs = 60 * 1000;
// After a burst of at least this many records, the first quiet second hands
// the memory its batches used back to the system.
constexpr uint64_t kTrimAfterRecords = 10'000;
// Blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap,
// and its free top is not given back below 1 GiB: trim_after_burst does it.
constexpr int kMallocMmapThreshold = 32 << 20;
constexpr int kMallocTrimThreshold = 1 << 30;

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// Start-up errors are exceptions, caught where the collector is started.
void check_uv(int result, const char* doing) {
    if (result < 0) throw std::system_error(-result, std::generic_category(), fmt::format("cannot {}", doing));
}

// A checkpoint encoded on the loop, being written by a thread of libuv's
// pool; the loop frees it when the write is done.
struct CheckpointWrite {
    uv_work_t work{};  // first: the request is the write
    std::string path;
    std::string data;
    uint64_t generation = 0;
    bool written = false;
};

// Open downloads and running requests below which encoding a checkpoint
// takes too little to measure its cost by.
constexpr uint64_t kMeasureEncodeFrom = 1024;

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
    return {decoded.record().log_number, decoded.record().connection_id, decoded.record().request_id};
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

void InFlightRequests::take_log(uint64_t number, const Lost& lost) {
    for (auto it = entries_.lower_bound({number, 0, 0}); it != entries_.end() && std::get<0>(it->first) == number;)
        take(it++, lost);
}

size_t InFlightRequests::take_silent(uint64_t before_ms, const Lost& lost) {
    size_t taken = 0;
    for (Entry* oldest = by_heard_.front(); oldest != nullptr && oldest->heard_ms < before_ms;
         oldest = by_heard_.front(), ++taken)
        take(entries_.find(key_of(oldest->last)), lost);
    return taken;
}

std::vector<RunningRequest> InFlightRequests::copy() const {
    std::vector<RunningRequest> running;
    running.reserve(entries_.size());
    // In the order last heard of, so that restore() rebuilds that order.
    for (const Entry* entry = by_heard_.front(); entry != nullptr; entry = decltype(by_heard_)::next(entry))
        running.push_back({entry->last, entry->heard_ms});
    return running;
}

void InFlightRequests::restore(std::vector<RunningRequest>&& running) {
    for (auto& request : running) update(std::move(request.last), request.heard_ms);
}

uint64_t Collector::Throttled::due(uint64_t count, uint64_t now_ms) {
    if (count == said || (ever && now_ms - said_at_ms < kWarningEveryMs)) return 0;
    const uint64_t since = count - said;
    said = count;
    said_at_ms = now_ms;
    ever = true;
    return since;
}

Collector::Collector(Runtime& runtime, std::string log_dir, int shard)
    : runtime_(runtime),
      dir_(std::move(log_dir)),
      shard_(shard),
      tracker_(runtime.config.tracking.idle_window_ms * 1000,
               static_cast<size_t>(runtime.config.tracking.max_open_downloads)),
      geoip_(runtime.config.geoip.city_db, runtime.config.geoip.asn_db),
      classifier_(runtime.config.tracking.client_class_rules),
      origin_(static_cast<uint64_t>(now_us()) + static_cast<uint64_t>(shard)),  // distinct for each shard
      clock_us_(now_us()) {
    batch_.origin = origin_;
    batch_.sequence = 1;
    if (WorkerBoard* board = the_worker_board(); board != nullptr)
        metrics_ = &board->metrics().collector(static_cast<size_t>(shard));
}

void Collector::start_stores() {
    // A spool directory per store, named after its module (and its rank
    // among entries of the same module), and the shard of collectors past the first.
    std::map<std::string, int> seen;
    for (auto& module : runtime_.modules) {
        if (SMP_MODULE_HOOK(module->api, store) == nullptr) continue;
        const std::string& name = module->entry->module;
        const int rank = seen[name]++;
        const std::string dir = runtime_.config.state_dir + "/spool/" + name +
                                (rank > 0 ? fmt::format("-{}", rank) : "") +
                                (shard_ > 0 ? fmt::format(".shard-{}", shard_) : "");
        WorkerBoard* board = the_worker_board();
        metrics::StoreMetrics* counts =
            metrics_ != nullptr ? &metrics_->stores[board->metrics().store_of(name.c_str())] : nullptr;
        // The collectors share the stores: the first one purges them.
        const int64_t retention_us = shard_ == 0 ? runtime_.config.tracking.retention_ms * 1000 : 0;
        storage_.push_back(std::make_unique<StorageThread>(*module, dir, counts, retention_us));
    }
}

void Collector::hand_to_stores() {
    if (storage_.empty() || batch_.empty()) return;
    Batch next;
    next.origin = origin_;
    next.sequence = batch_.sequence + 1;
    // The next second is likely as busy as this one: no growing by copies.
    next.records.reserve(batch_.records.size());
    next.downloads.reserve(batch_.downloads.size());
    auto batch = std::make_shared<const Batch>(std::exchange(batch_, std::move(next)));
    for (auto& storage : storage_) storage->submit(batch);
}

bool Collector::stores_have(uint64_t sequence) const {
    return std::all_of(storage_.begin(), storage_.end(),
                       [sequence](const auto& storage) { return storage->durable_sequence() >= sequence; });
}

void Collector::stop_stores() {
    hand_to_stores();
    for (auto& storage : storage_) storage->stop();
}

int Collector::run() {
    keep_freed_memory();
    check_uv(uv_loop_init(&loop_), "make the stats collector's event loop");
    signal_fd_ = watch_stop_signals(&loop_, &signal_poll_, this, on_signal);
    for (uv_timer_t* timer : {&poll_, &tick_}) {
        check_uv(uv_timer_init(&loop_, timer), "make the stats collector's timers");
        timer->data = this;
    }
    check_uv(uv_idle_init(&loop_, &backlog_), "make the stats collector's backlog reader");
    backlog_.data = this;
    start_stores();
    recovering_ = true;
    recover();
    recovering_ = false;
    check_uv(uv_timer_start(&poll_, on_poll, kPollMs, kPollMs), "start the stats collector's timer");
    check_uv(uv_timer_start(&tick_, on_tick, kTickMs, kTickMs), "start the stats collector's timer");
    const TrackingConfig& tracking = runtime_.config.tracking;
    spdlog::info(
        "Stats collector ready: {} tracking log(s), downloads end after {} s idle; at most {} open; client classes "
        "from {} ({} rules)",
        logs_.size(), tracking.idle_window_ms / 1000, tracking.max_open_downloads,
        tracking.client_classes.empty() ? std::string("the rules built in") : tracking.client_classes,
        tracking.client_class_rules->rules().size());

    uv_run(&loop_, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop_) != 0) spdlog::warn("event loop closed with handles still open");
    spdlog::info("Stats collector stopped: {} record(s), {} download(s), {} malformed record(s)", records_, downloads_,
                 malformed_);
    return 0;
}

// ---- start-up -----------------------------------------------------------------

void Collector::recover() {
    remove_new_checkpoints(dir_);  // of a collector that died writing one
    std::vector<LogPlace> places;
    uint64_t first_journal = 0;
    std::string data;
    if (read_whole_file(checkpoint_path(dir_), data)) {
        auto checkpoint = decode_checkpoint(data);
        if (checkpoint && tracker_.load(checkpoint->downloads)) {
            places = std::move(checkpoint->logs);
            in_flight_.restore(std::move(checkpoint->running));
            clock_us_ = checkpoint->clock_us;
            first_journal = checkpoint->generation;
        } else {
            // The logs are read from where they were released, with no open
            // download: a download under way may be stored as two.
            spdlog::error("the checkpoint {} is damaged: reading the tracking logs from their released positions",
                          checkpoint_path(dir_));
            first_journal = UINT64_MAX;  // the journals since it are of no use
        }
    }
    open_new_logs(places);
    uint64_t last_journal = first_journal == UINT64_MAX ? 0 : first_journal;
    uint64_t replayed = 0;
    bool replaying = first_journal != UINT64_MAX;
    for (uint64_t generation : list_journals(dir_)) {
        last_journal = std::max(last_journal, generation);
        if (!replaying || generation < first_journal) continue;
        for (const JournalEntry& entry : read_journal(journal_path(dir_, generation))) {
            if (!replay(entry)) {
                spdlog::error("the journal {} does not match the tracking logs: replay stopped there",
                              journal_path(dir_, generation));
                replaying = false;
                break;
            }
            ++replayed;
        }
    }
    if (replayed > 0)
        spdlog::info("Stats collector continues from its checkpoint: {} journaled step(s) replayed, {} record(s)",
                     replayed, records_);
    std::string error;
    if (!journal_.start(dir_, last_journal + 1, error)) {
        spdlog::error("{}: a collector that crashes may store downloads twice", error);
        journal_failing_ = true;
    }
}

void Collector::open_new_logs(const std::vector<LogPlace>& places) {
    for (uint64_t number : list_record_logs(dir_)) {
        if (logs_.contains(number) || unreadable_.contains(number)) continue;
        std::string error;
        const std::string path = record_log_path(dir_, number);
        auto mapped = MappedLog::open(path, error);
        if (!mapped) {
            spdlog::error("cannot read the tracking log {}: {}", path, error);
            unreadable_.insert(number);
            continue;
        }
        auto place =
            std::find_if(places.begin(), places.end(), [number](const LogPlace& p) { return p.number == number; });
        if (place != places.end() && place->done) {
            unlink(path.c_str());  // committed as done: the crash came before it was deleted
            continue;
        }
        const uint64_t released = mapped->header().released.load(std::memory_order_acquire);
        // A log the checkpoint does not know of is new since, and read from
        // its start; unless the checkpoint was lost, then from where it was
        // released, with its next record index unknown.
        const uint64_t position = place != places.end() ? place->position : released;
        const uint64_t index = place != places.end() ? place->index
                               : released == 0       ? 0
                                                     : RecordLogReader::kUnknownIndex;
        logs_.emplace(number, Log{RecordLogReader(std::move(*mapped), position, index)});
    }
}

bool Collector::replay(const JournalEntry& entry) {
    switch (entry.kind) {
        case JournalEntry::read: {
            auto log = logs_.find(entry.a);
            if (log == logs_.end()) return false;
            read_log(log->second, entry.b);
            return log->second.reader.index() == entry.b;
        }
        case JournalEntry::ended: {
            auto log = logs_.find(entry.a);
            if (log == logs_.end() || !log->second.reader.finished()) return false;
            end_log(log->second);
            return true;
        }
        case JournalEntry::tick: tick(static_cast<int64_t>(entry.a)); return true;
        default: return false;
    }
}

// ---- reading the logs ------------------------------------------------------------

void Collector::on_poll(uv_timer_t* timer) {
    auto& self = *static_cast<Collector*>(timer->data);
    // Seen within a poll: how long a checkpoint takes sets how often.
    self.finish_checkpoint();
    self.reap_killed_writers(false);
    if (self.stores_behind()) return;
    if (self.read_logs(kRecordsPerTurn)) uv_idle_start(&self.backlog_, on_backlog);
}

void Collector::on_backlog(uv_idle_t* idle) {
    auto& self = *static_cast<Collector*>(idle->data);
    if (self.stores_behind() || !self.read_logs(kRecordsPerTurn)) uv_idle_stop(idle);
}

// A store slower than the traffic: the records wait in the logs, where they
// cost no memory, rather than in batches here (the logs are the buffer; a
// log that fills up drops, and says so). A store that fails spools, which
// counts as having the batch: an outage does not stop the reading.
bool Collector::stores_behind() const {
    const uint64_t handed = batch_.sequence - 1;
    return handed > kBatchesAhead && !stores_have(handed - kBatchesAhead);
}

bool Collector::read_logs(uint64_t budget) {
    bool more = false;
    for (auto& [number, log] : logs_) {
        if (log.done) continue;
        const uint64_t read = read_log(log, log.reader.index() + std::min(budget, UINT64_MAX - log.reader.index()));
        if (read > 0) journal_.add({JournalEntry::read, 0, number, log.reader.index()});
        if (read == budget) {
            more = true;
            continue;
        }
        if (log.reader.finished()) {
            if (log.reader.damaged())
                spdlog::error("tracking log {} is damaged after record {}: the rest of it is not read", number,
                              log.reader.index());
            end_log(log);
            journal_.add({JournalEntry::ended, 0, number, 0});
        }
    }
    if (!journal_.flush() && !journal_failing_) {
        spdlog::error("cannot write the collector's journal in {}: a collector that crashes may store downloads twice",
                      dir_);
        journal_failing_ = true;
    }
    return more;
}

uint64_t Collector::read_log(Log& log, uint64_t last) {
    uint64_t read = 0;
    while (log.reader.index() < last || log.reader.index() == RecordLogReader::kUnknownIndex) {
        auto frame = log.reader.next();
        if (!frame) break;
        handle(log, *frame);
        ++read;
    }
    return read;
}

void Collector::handle(Log& log, const RecordLogReader::Frame& frame) {
    auto decoded = DecodedRecord::view(frame.encoding);
    if (!decoded) {
        ++malformed_;
        return;
    }
    const uint64_t number = log.reader.number();
    decoded->set_log_place(number, frame.index);
    if (frame.kind == RecordKind::transfer) {
        decoded->own();  // kept for as long as the request runs
        in_flight_.update(std::move(*decoded), static_cast<uint64_t>(clock_us_ / 1000));
        return;
    }
    ++records_;
    last_read_end_us_ = decoded->record().end_us;
    if (metrics_ != nullptr && !recovering_) metrics::add(metrics_->records);
    in_flight_.erase(*decoded);
    tracker_.add(decoded->record(), download_id(number, frame.index), decoded->geo());
    // In place: the log is not released before the stores have the batch.
    if (!storage_.empty()) add_to_batch(std::move(*decoded));
}

void Collector::add_to_batch(DecodedRecord&& record) {
    const char* agent = record.record().user_agent;
    batch_.add(std::move(record), classifier_.of(agent != nullptr ? agent : ""));
    hand_over_if_full();
}

// Where a batch is cut depends only on the records read and the ticks, in
// their order: a collector that replays its journal cuts the same batches.
void Collector::hand_over_if_full() {
    if (batch_.records.size() + batch_.downloads.size() >= kBatchRows) hand_to_stores();
}

void Collector::end_log(Log& log) {
    // Its worker is gone: a request still running ends at its last progress
    // report. These made-up records come after every real one of the log,
    // so they take the indexes after its last.
    uint64_t index = log.reader.index() == RecordLogReader::kUnknownIndex ? 0 : log.reader.index();
    const uint64_t number = log.reader.number();
    in_flight_.take_log(number, [&](DecodedRecord& last) {
        last.set_log_place(number, ++index);
        close_lost(last, download_id(number, index), SMP_END_WORKER_LOST);
    });
    log.done = true;
}

void Collector::close_lost(DecodedRecord& last, uint64_t id, smp_end_reason reason) {
    last.set_reason(reason);
    ++records_;
    tracker_.add(last.record(), id, last.geo());
    if (!storage_.empty()) add_to_batch(std::move(last));
}

void Collector::close_silent_requests() {
    // Its worker is alive, or its log would have ended: the close record
    // found the log full.
    const uint64_t now_ms = static_cast<uint64_t>(clock_us_ / 1000);
    if (now_ms > kSilentRequestMs)
        silent_closed_ += in_flight_.take_silent(now_ms - kSilentRequestMs, [this](DecodedRecord& last) {
            // Not a record of the log: a store never skips it.
            const uint64_t id = download_id(last.record().log_number, last.record().log_index);
            last.set_log_place(0, 0);
            close_lost(last, id, SMP_END_RECORD_LOST);
        });
    if (const uint64_t closed = silent_warning_.due(silent_closed_, uv_now(&loop_)))
        spdlog::warn(
            "{} running request(s) not heard of for {} min closed with reason record_lost: their end found the "
            "tracking log full ({} so far)",
            closed, kSilentRequestMs / 60'000, silent_closed_);
}

void Collector::report_finished_early() {
    if (const uint64_t early = cap_warning_.due(tracker_.finished_early(), uv_now(&loop_)))
        spdlog::warn("open downloads at the cap ({}): finishing the oldest early ({} in the last minute, {} so far)",
                     tracker_.max_open(), early, tracker_.finished_early());
}

void Collector::report_dropped() {
    uint64_t dropped = 0;
    for (const auto& [number, log] : logs_) dropped += log.reader.dropped();
    if (const uint64_t recent = dropped_warning_.due(dropped, uv_now(&loop_)))
        spdlog::warn("{} record(s) dropped by workers whose tracking log was full ({} in the logs being read)", recent,
                     dropped);
}

// ---- the tick -------------------------------------------------------------------

void Collector::on_tick(uv_timer_t* timer) {
    auto& self = *static_cast<Collector*>(timer->data);
    const int64_t now = now_us();
    self.journal_.add({JournalEntry::tick, 0, static_cast<uint64_t>(now), 0});
    self.tick(now);
    self.journal_.flush();
    self.report_finished_early();
    self.report_dropped();
    self.trim_after_burst();
    self.post_metrics(now);
    self.finish_checkpoint();
    // Every tracking.checkpoint_interval, and at most a tenth of a core: a
    // large state (a million open downloads take about a second to write)
    // is checkpointed less often. But sooner when a log fills: its space
    // comes back only at a checkpoint.
    const auto every_ms = std::max(static_cast<uint64_t>(self.runtime_.config.tracking.checkpoint_interval_ms),
                                   10 * self.checkpoint_took_ms_);
    if (!self.pending_ && (uv_now(&self.loop_) - self.checkpoint_started_ms_ >= every_ms || self.logs_filling()))
        self.start_checkpoint();
    self.open_new_logs({});
}

// A log with a quarter of its ring read and not released: the next
// checkpoint gives it back. A ring full of what is not read yet is not
// helped by one; a checkpoint for each tick of a backlog only cost the
// collector a fork and the page faults after it.
bool Collector::logs_filling() const {
    return std::any_of(logs_.begin(), logs_.end(), [](const auto& entry) {
        return !entry.second.done && entry.second.reader.releasable_quarter();
    });
}

// What a tick changes is journaled with its time: a replay ticks the same.
void Collector::tick(int64_t now) {
    clock_us_ = now;
    close_silent_requests();
    if (now == kEndOfTime)
        tracker_.finish_all([&](const LogicalDownload& d) { finish(d); });
    else
        tracker_.expire(now, [&](const LogicalDownload& d) { finish(d); });
    if (!storage_.empty()) {
        // Stores show downloads as they grow: each second, the ones a request
        // joined, once they are a second old (kOpenRowAfterUs).
        tracker_.each_changed(
            [&](const LogicalDownload& d) {
                batch_.add(d, place_of(d), false, classifier_.of(d.user_agent));
                hand_over_if_full();
            },
            now - kOpenRowAfterUs);
    }
    hand_to_stores();
}

void Collector::post_metrics(int64_t now) {
    if (metrics_ == nullptr) return;
    uint64_t backlog = 0;
    for (const auto& [number, log] : logs_)
        if (!log.done) backlog += log.reader.unread();
    metrics_->backlog_bytes.store(static_cast<int64_t>(backlog), std::memory_order_relaxed);
    metrics_->lag_us.store(backlog > 0 && last_read_end_us_ > 0 ? std::max<int64_t>(0, now - last_read_end_us_) : 0,
                           std::memory_order_relaxed);
    metrics_->downloads_open.store(static_cast<int64_t>(tracker_.open_downloads()), std::memory_order_relaxed);
    publish_live_downloads();
}

// The dashboard's downloads in progress: the running responses grouped by
// download, with what the download's ended requests already delivered, the
// most recently active first. At most a few thousand responses run at once,
// walked once a second.
void Collector::publish_live_downloads() {
    struct Running {
        const smp_record* first = nullptr;
        const char* geo = nullptr;
        IntervalSet delivered;
        uint64_t sent = 0;
        double speed_bps = 0;
        int64_t started_us = INT64_MAX;
        int64_t last_us = 0;
        uint32_t requests = 0;
    };
    std::map<std::tuple<std::string_view, std::string_view, std::string_view, std::string_view>, Running> downloads;
    in_flight_.each([&](const DecodedRecord& last) {
        const smp_record& record = last.record();
        if (record.path == nullptr) return;
        const DownloadKey key = download_key(record);
        Running& running = downloads[{key.path, key.etag, key.client, key.agent}];
        if (running.first == nullptr) {
            running.first = &record;
            running.geo = last.geo();
        }
        for (size_t i = 0; i < record.interval_count; ++i)
            running.delivered.add(record.intervals[i].first, record.intervals[i].last);
        running.sent += record.body_bytes;
        const int64_t took_us = record.end_us - record.start_us;
        if (took_us > 0)
            running.speed_bps += static_cast<double>(record.body_bytes) * 1e6 / static_cast<double>(took_us);
        running.started_us = std::min(running.started_us, record.start_us);
        running.last_us = std::max(running.last_us, record.end_us);
        ++running.requests;
    });
    std::vector<std::pair<metrics::LiveDownload, std::string_view>> rows;  // and the client's place, if sent
    rows.reserve(downloads.size());
    for (auto& [key, running] : downloads) {
        const smp_record& record = *running.first;
        uint64_t id = 0;
        if (const LogicalDownload* open = tracker_.open_download_of(record)) {
            for (const auto& interval : open->delivered.intervals())
                running.delivered.add(interval.first, interval.last);
            running.requests += open->requests;
            running.started_us = std::min(running.started_us, open->first_us);
            id = open->id;
        }
        auto& [row, geo] = rows.emplace_back();
        geo = running.geo != nullptr ? running.geo : "";
        std::snprintf(row.path, sizeof row.path, "%.*s", static_cast<int>(std::get<0>(key).size()),
                      std::get<0>(key).data());
        std::snprintf(row.client_ip, sizeof row.client_ip, "%.*s", static_cast<int>(std::get<2>(key).size()),
                      std::get<2>(key).data());
        row.id = id;
        row.file_size = record.file_size > 0 ? static_cast<uint64_t>(record.file_size) : 0;
        row.bytes = running.delivered.size();
        row.sent = running.sent;
        row.started_us = running.started_us;
        row.last_us = running.last_us;
        row.requests = running.requests;
        row.speed_bps = running.speed_bps;
    }
    const size_t shown = std::min(rows.size(), metrics::LiveDownloads::kRows);
    std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(shown), rows.end(),
                      [](const auto& a, const auto& b) { return a.first.last_us > b.first.last_us; });
    std::vector<metrics::LiveDownload> published(shown);
    for (size_t i = 0; i < shown; ++i) {
        published[i] = rows[i].first;
        const GeoInfo geo = place_of(published[i].client_ip, rows[i].second);
        std::snprintf(published[i].country, sizeof published[i].country, "%s", geo.country.c_str());
    }
    metrics_->live.write(published.data(), shown);
}

void Collector::keep_freed_memory() {
    // A busy collector allocates and frees MiBs many times a second: its
    // batches (2 to 3 MiB each) and the store's blocks of requests. With
    // malloc's defaults, a block above its mmap threshold (128 KiB, then
    // whatever was last freed) is mapped fresh and unmapped when freed, and
    // the free top of the heap goes back to the kernel once larger than the
    // trim threshold: each time the next batch is written into new pages, a
    // page fault every 4 KiB (under wrk on 4 KiB files, before this: 6,100
    // faults a second; docs/tracking.md). Freed memory is kept instead, and
    // given back once the burst is over (trim_after_burst).
    mallopt(M_MMAP_THRESHOLD, kMallocMmapThreshold);
    mallopt(M_TRIM_THRESHOLD, kMallocTrimThreshold);
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
    if (metrics_ != nullptr && !recovering_) {
        metrics::add(metrics_->downloads_finished[std::min<size_t>(download.reason(), metrics::kReasons - 1)]);
        metrics_->download_duration.observe(download.wall_us());
    }
    const bool logged = spdlog::should_log(spdlog::level::info);
    // Looked up only when used: at full load there are thousands a second.
    if (!logged && storage_.empty()) return;
    GeoInfo geo = place_of(download);
    if (logged) spdlog::info("{}", describe_download(download, geo));
    if (storage_.empty()) return;
    batch_.add(download, geo, true, classifier_.of(download.user_agent));
    hand_over_if_full();
}

GeoInfo Collector::place_of(const LogicalDownload& download) const {
    return place_of(download.client_ip.view(), download.geo.view());
}

GeoInfo Collector::place_of(std::string_view client_ip, std::string_view geo) const {
    if (!geo.empty())
        if (auto place = decode_geo(geo)) return *place;
    return geoip_.lookup(std::string(client_ip));
}

// ---- the checkpoint ----------------------------------------------------------------

std::vector<LogPlace> Collector::places() const {
    std::vector<LogPlace> places;
    for (const auto& [number, log] : logs_)
        places.push_back({number, log.reader.position(), log.reader.index(), log.done});
    return places;
}

void Collector::start_checkpoint(bool here) {
    // What follows this instant goes to the next journal; the checkpoint is
    // the state at this instant. A state that encodes within
    // tracking.checkpoint_pause is encoded here and written by a thread.
    // A larger one is written by a copy of this process: the pages are
    // shared until written, so the loop goes on at once (as Redis saves its
    // data set), but its next write to each page is a fault, which costs
    // more than encoding a small state (docs/tracking.md).
    std::string error;
    const uint64_t generation = journal_.generation() + 1;
    if (!journal_.start(dir_, generation, error)) {
        if (!checkpoint_failing_) spdlog::error("cannot checkpoint the stats collector: {}", error);
        checkpoint_failing_ = true;
        return;
    }
    checkpoint_started_ms_ = uv_now(&loop_);
    checkpoint_started_ns_ = uv_hrtime();
    PendingCheckpoint pending;
    pending.generation = generation;
    pending.sequence = batch_.sequence - 1;
    pending.logs = places();
    if (here) {
        if (!write_file_synced(new_checkpoint_path(dir_, generation), encode_checkpoint_now(pending))) {
            spdlog::error("cannot write the stats collector's checkpoint {}", new_checkpoint_path(dir_, generation));
            checkpoint_failing_ = true;
            return;
        }
        pending.written = true;
        pending_ = std::move(pending);
        return;
    }
    if (encodes_within_pause()) {
        const uint64_t began_ns = uv_hrtime();
        std::string data = encode_checkpoint_now(pending);
        learn_encoding_cost(uv_hrtime() - began_ns, data.size(), generation);
        if (write_on_thread(std::move(data), generation)) {
            pending_ = std::move(pending);
            return;
        }
    }
    const pid_t pid = fork();
    if (pid == 0) {
        // Dies with the collector: a collector started after it must never
        // find this one's file appearing later.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(1);
        _exit(write_file_synced(new_checkpoint_path(dir_, generation), encode_checkpoint_now(pending)) ? 0 : 1);
    }
    if (pid < 0) {
        if (!checkpoint_failing_)
            spdlog::error("cannot checkpoint the stats collector: fork: {}", std::strerror(errno));
        checkpoint_failing_ = true;
        return;
    }
    pending.pid = pid;
    pending_ = std::move(pending);
}

bool Collector::encodes_within_pause() const {
    const uint64_t pause_ns = static_cast<uint64_t>(runtime_.config.tracking.checkpoint_pause_ms) * 1'000'000;
    const uint64_t entries = tracker_.open_downloads() + tracker_.finished_downloads() + in_flight_.size();
    return pause_ns > 0 && entries * encode_ns_per_entry_ <= pause_ns;
}

// Also called in a forked copy: it takes no lock (nor logs) that another
// thread may have held at the fork.
std::string Collector::encode_checkpoint_now(const PendingCheckpoint& pending) const {
    Checkpoint checkpoint;
    checkpoint.generation = pending.generation;
    checkpoint.clock_us = clock_us_;
    checkpoint.logs = pending.logs;
    tracker_.save(checkpoint.downloads);
    checkpoint.running = in_flight_.copy();
    return encode_checkpoint(checkpoint);
}

void Collector::learn_encoding_cost(uint64_t took_ns, size_t bytes, uint64_t generation) {
    const uint64_t entries = tracker_.open_downloads() + tracker_.finished_downloads() + in_flight_.size();
    if (entries >= kMeasureEncodeFrom) encode_ns_per_entry_ = std::max<uint64_t>(1, took_ns / entries);
    spdlog::debug("checkpoint {}: {} open download(s) and running request(s), {} bytes, encoded in {:.3f} ms",
                  generation, entries, bytes, static_cast<double>(took_ns) / 1e6);
}

bool Collector::write_on_thread(std::string data, uint64_t generation) {
    auto write = std::make_unique<CheckpointWrite>();
    write->work.data = this;
    write->path = new_checkpoint_path(dir_, generation);
    write->data = std::move(data);
    write->generation = generation;
    const auto write_it = [](uv_work_t* work) {
        auto* write = reinterpret_cast<CheckpointWrite*>(work);
        write->written = write_file_synced(write->path, write->data);
    };
    if (uv_queue_work(&loop_, &write->work, write_it, on_checkpoint_written) != 0) return false;
    write.release();  // freed by on_checkpoint_written
    return true;
}

void Collector::on_checkpoint_written(uv_work_t* work, int /*status*/) {
    const std::unique_ptr<CheckpointWrite> write(reinterpret_cast<CheckpointWrite*>(work));
    auto& self = *static_cast<Collector*>(work->data);
    if (!self.pending_ || self.pending_->generation != write->generation) {
        // Abandoned at the stop, which wrote a later one.
        unlink(write->path.c_str());
        return;
    }
    if (!write->written) return self.checkpoint_not_written(write->generation);
    self.pending_->written = true;
    self.checkpoint_took_ms_ = self.checkpoint_took_ms();
    self.thread_write_slow_said_ = false;
    self.finish_checkpoint();
}

// From the checkpoint's start to its file on disk, by the clock: the loop's
// is the time its turn began, and a tick under load begins its checkpoint a
// few hundred ms into its turn. Measured by the loop's, a write done 13 ms
// after its start took 211, and ten times that spaced the checkpoints
// seconds apart.
uint64_t Collector::checkpoint_took_ms() const { return (uv_hrtime() - checkpoint_started_ns_) / 1'000'000; }

void Collector::checkpoint_not_written(uint64_t generation) {
    if (!checkpoint_failing_)
        spdlog::error("cannot write the stats collector's checkpoint {}: trying again",
                      new_checkpoint_path(dir_, generation));
    checkpoint_failing_ = true;
    unlink(new_checkpoint_path(dir_, generation).c_str());
    pending_.reset();
}

void Collector::abandon_checkpoint() {
    if (!pending_) return;
    // A thread writing it cannot be stopped: when it is done, it finds the
    // checkpoint abandoned and removes its file.
    if (!pending_->written && pending_->pid != 0) {
        kill(pending_->pid, SIGKILL);
        killed_writers_.push_back({pending_->pid, pending_->generation});
    }
    unlink(new_checkpoint_path(dir_, pending_->generation).c_str());
    pending_.reset();
}

// A killed copy stuck in the kernel (a write to a disk that does not answer)
// exits only when its call returns: the loop does not wait for that, the
// stop does. Its file is removed again once it has exited, in case it was
// creating it.
void Collector::reap_killed_writers(bool wait) {
    std::erase_if(killed_writers_, [this, wait](const KilledWriter& writer) {
        if (waitpid(writer.pid, nullptr, wait ? 0 : WNOHANG) == 0) return false;
        unlink(new_checkpoint_path(dir_, writer.generation).c_str());
        return true;
    });
}

// A copy that has not written the checkpoint in six intervals (a minute by
// default), nor in ten times what the last one took, is stuck: on a disk
// that does not answer, or on a lock another thread held at the fork. It is
// killed and the next tick forks another; meanwhile the logs are not
// released, so a stuck writer would fill them.
// A thread cannot be killed: that it is slow is said once, and the logs are
// released when it is done.
void Collector::abandon_stuck_checkpoint() {
    const uint64_t bound_ms =
        std::max(6 * static_cast<uint64_t>(runtime_.config.tracking.checkpoint_interval_ms), 10 * checkpoint_took_ms_);
    const uint64_t running_ms = uv_now(&loop_) - checkpoint_started_ms_;
    if (running_ms < bound_ms) return;
    if (pending_->pid == 0) {
        if (!thread_write_slow_said_)
            spdlog::warn(
                "the stats collector's checkpoint {} has not been written in {} s: the tracking logs are "
                "released when it is",
                pending_->generation, running_ms / 1000);
        thread_write_slow_said_ = true;
        return;
    }
    spdlog::warn(
        "the copy of the stats collector writing checkpoint {} (pid {}) has not finished in {} s: stopping "
        "it; the next tick starts another",
        pending_->generation, pending_->pid, running_ms / 1000);
    abandon_checkpoint();
}

void Collector::finish_checkpoint() {
    if (!pending_) return;
    PendingCheckpoint& pending = *pending_;
    if (!pending.written) {
        int status = 0;
        const pid_t exited = pending.pid != 0 ? waitpid(pending.pid, &status, WNOHANG) : 0;
        if (exited == 0) {
            abandon_stuck_checkpoint();
            return;
        }
        if (exited < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return checkpoint_not_written(pending.generation);
        pending.written = true;
        checkpoint_took_ms_ = checkpoint_took_ms();
    }
    if (!stores_have(pending.sequence)) return;
    const std::string path = checkpoint_path(dir_);
    if (std::rename(new_checkpoint_path(dir_, pending.generation).c_str(), path.c_str()) != 0) {
        if (!checkpoint_failing_) spdlog::error("cannot commit the checkpoint {}: {}", path, std::strerror(errno));
        checkpoint_failing_ = true;
        pending_.reset();
        return;
    }
    sync_directory(dir_);
    if (checkpoint_failing_) spdlog::info("the stats collector's checkpoint is written again");
    checkpoint_failing_ = false;
    for (uint64_t generation : list_journals(dir_))
        if (generation < pending.generation) unlink(journal_path(dir_, generation).c_str());
    // The stores have every record before these places, and the checkpoint
    // every effect they had: the workers may write over them.
    for (const LogPlace& place : pending.logs) {
        auto log = logs_.find(place.number);
        if (log == logs_.end()) continue;
        log->second.reader.release(place.position);
        if (place.done) {
            add_dropped_records(dir_, log->second.reader.dropped());
            unlink(record_log_path(dir_, place.number).c_str());
            logs_.erase(log);
        }
    }
    pending_.reset();
}

// ---- stop -------------------------------------------------------------------------

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
    // Everything the workers wrote; when they are all gone (the server
    // stops: the master stops the collector last), every running request
    // and open download ends here. Else (a reload restarts the collector)
    // the next collector continues them from the checkpoint.
    open_new_logs({});
    while (read_logs(UINT64_MAX)) {
    }
    const bool workers_gone = std::all_of(logs_.begin(), logs_.end(), [](const auto& log) { return log.second.done; });
    const int64_t now = workers_gone ? kEndOfTime : now_us();
    journal_.add({JournalEntry::tick, 0, static_cast<uint64_t>(now), 0});
    journal_.flush();
    tick(now);
    clock_us_ = now_us();
    stop_stores();
    // The stores have everything now (stored or spooled): a last checkpoint
    // commits it. Written by this process: a copy still writing an earlier
    // one is not waited for, since this one supersedes it (and a copy forked
    // beside other threads may never finish: a lock one of them held, in an
    // allocator that is not fork-safe, stays held in the copy forever).
    abandon_checkpoint();
    reap_killed_writers(true);
    start_checkpoint(true);
    finish_checkpoint();  // written here: committed at once, the stores having every batch
    for (auto* handle : {reinterpret_cast<uv_handle_t*>(&poll_), reinterpret_cast<uv_handle_t*>(&tick_),
                         reinterpret_cast<uv_handle_t*>(&backlog_), reinterpret_cast<uv_handle_t*>(&signal_poll_)})
        uv_close(handle, nullptr);
    ::close(signal_fd_);
}

}  // namespace smp
