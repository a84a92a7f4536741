#include "download_tracker.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "download_key.hpp"
#include "record_codec.hpp"

namespace smp {
namespace {

const char* or_empty(const char* text) { return text != nullptr ? text : ""; }

// The snapshot's first bytes: its name, then its version in the host's byte
// order, so that a snapshot of another format, or from a host of the other
// byte order, is refused at once.
constexpr std::string_view kSnapshotMagic = "SMPD";
// Version 2 added the place (LogicalDownload::geo); version 1 is still read.
constexpr uint32_t kSnapshotVersion = 2;
// The fewest bytes a download takes in a snapshot (no intervals, version 1:
// version 2 adds 4): counts read from a snapshot are checked against the
// bytes left before anything is allocated for them.
constexpr size_t kMinSnapshotDownload = 5 * 8 + 2 * 4 + 5 * 4 + 4 + 1 + 2 * 4;

// Writes through a buffer of its own, appended to the snapshot when full:
// a download is some twenty numbers, and appending each to the string
// costs more than copying it.
class SnapshotWriter {
   public:
    explicit SnapshotWriter(std::string& out) : out_(out) {}
    SnapshotWriter(const SnapshotWriter&) = delete;
    SnapshotWriter& operator=(const SnapshotWriter&) = delete;

    template <typename T>
    void put(T value) {
        static_assert(std::is_trivially_copyable_v<T>);
        if (used_ + sizeof(T) > buffer_.size()) flush();
        std::memcpy(buffer_.data() + used_, &value, sizeof(T));
        used_ += sizeof(T);
    }
    void put_bytes(std::string_view bytes) {
        if (used_ + bytes.size() > buffer_.size()) flush();
        if (bytes.size() > buffer_.size()) {
            out_.append(bytes);
            return;
        }
        std::memcpy(buffer_.data() + used_, bytes.data(), bytes.size());
        used_ += bytes.size();
    }
    // Appends what is buffered; the snapshot is whole after the last flush.
    void flush() {
        out_.append(buffer_.data(), used_);
        used_ = 0;
    }
    void put_text(std::string_view text) {
        put(static_cast<uint32_t>(text.size()));
        put_bytes(text);
    }
    // A handle as the number of its text in the snapshot's table: 0 for the
    // empty text, else its number in the pool plus one.
    void put_text_number(const SharedString& text) { put(text.empty() ? uint32_t{0} : text.number() + 1); }
    void put_intervals(const IntervalSet& set) {
        const std::span<const IntervalSet::Interval> intervals = set.intervals();
        put(static_cast<uint32_t>(intervals.size()));
        for (const IntervalSet::Interval& interval : intervals) {
            put(interval.first);
            put(interval.last);
        }
    }
    void put_download(const LogicalDownload& d) {
        put(d.id);
        put(d.file_size);
        put(d.bytes_sent);
        put(d.first_us);
        put(d.last_us);
        put(d.requests);
        put(d.resumes);
        for (const SharedString* text : {&d.node, &d.client_ip, &d.user_agent, &d.path, &d.etag, &d.geo})
            put_text_number(*text);
        put(static_cast<uint32_t>(d.last_reason));
        put(static_cast<uint8_t>(d.finished_early ? 1 : 0));
        put_intervals(d.delivered);
        put_intervals(d.active);
    }

   private:
    std::string& out_;
    std::array<char, 64 * 1024> buffer_;
    size_t used_ = 0;
};

// Reads what SnapshotWriter wrote; every read is checked against the bytes
// left, and says false past them.
class SnapshotReader {
   public:
    explicit SnapshotReader(std::string_view data) : data_(data) {}

    size_t remaining() const { return data_.size(); }

    template <typename T>
    bool get(T& value) {
        static_assert(std::is_trivially_copyable_v<T>);
        if (data_.size() < sizeof(T)) return false;
        std::memcpy(&value, data_.data(), sizeof(T));
        data_.remove_prefix(sizeof(T));
        return true;
    }
    bool get_bytes(size_t count, std::string_view& bytes) {
        if (data_.size() < count) return false;
        bytes = data_.substr(0, count);
        data_.remove_prefix(count);
        return true;
    }
    // A count of items of at least `item_bytes` each, no more than the bytes
    // left can hold.
    bool get_count(size_t item_bytes, uint32_t& count) { return get(count) && count <= data_.size() / item_bytes; }
    // `texts` are the snapshot's texts by number, 0 the empty one.
    bool get_text(std::span<const SharedString> texts, SharedString& text) {
        uint32_t number = 0;
        if (!get(number) || number >= texts.size()) return false;
        text = texts[number];
        return true;
    }
    bool get_intervals(IntervalSet& set, std::vector<IntervalSet::Interval>& scratch) {
        uint32_t count = 0;
        if (!get_count(2 * sizeof(uint64_t), count)) return false;
        scratch.resize(count);
        for (IntervalSet::Interval& interval : scratch)
            if (!get(interval.first) || !get(interval.last)) return false;
        if (!IntervalSet::well_formed(scratch)) return false;
        set.assign(scratch);
        return true;
    }
    bool get_download(std::span<const SharedString> texts, LogicalDownload& d,
                      std::vector<IntervalSet::Interval>& scratch, uint32_t version) {
        uint32_t reason = 0;
        uint8_t finished_early = 0;
        const bool read = get(d.id) && get(d.file_size) && get(d.bytes_sent) && get(d.first_us) && get(d.last_us) &&
                          get(d.requests) && get(d.resumes) && get_text(texts, d.node) &&
                          get_text(texts, d.client_ip) && get_text(texts, d.user_agent) && get_text(texts, d.path) &&
                          get_text(texts, d.etag) && (version < 2 || get_text(texts, d.geo)) && get(reason) &&
                          get(finished_early) && get_intervals(d.delivered, scratch) &&
                          get_intervals(d.active, scratch);
        // A reason this build does not know is not one it wrote.
        if (!read || reason > kLastEndReason || finished_early > 1) return false;
        d.last_reason = static_cast<smp_end_reason>(reason);
        d.finished_early = finished_early == 1;
        return true;
    }

   private:
    std::string_view data_;
};

}  // namespace

// The layouts the headers count, on the 64-bit hosts the collector runs on.
static_assert(sizeof(void*) != 8 || sizeof(IntervalSet) == 24);
static_assert(sizeof(void*) != 8 || sizeof(LogicalDownload) == 152);

double LogicalDownload::coverage() const {
    if (file_size == 0) return completed() ? 1.0 : 0.0;
    return static_cast<double>(delivered.size()) / static_cast<double>(file_size);
}

double LogicalDownload::average_speed() const {
    const int64_t active = active_us();
    return active > 0 ? static_cast<double>(distinct_bytes()) * 1e6 / static_cast<double>(active) : 0.0;
}

bool is_download_record(const smp_record& record) {
    return record.method != nullptr && std::strcmp(record.method, "GET") == 0 &&
           (record.status == 200 || record.status == 206) && record.file_size >= 0 && record.etag != nullptr &&
           record.path != nullptr;
}

// ---- the node store and its lists ----

uint32_t DownloadTracker::NodeStore::push_back() {
    if (size_ == kNone) throw std::length_error("download tracker: too many open downloads");
    if ((size_ >> kChunkBits) == chunks_.size()) chunks_.push_back(std::make_unique<Node[]>(kChunkMask + 1));
    return size_++;
}

void DownloadTracker::NodeStore::pop_back() {
    (*this)[size_ - 1] = Node{};
    --size_;
    // One spare chunk stays, so that downloads opening and ending around a
    // chunk's edge do not allocate and free it each time.
    const size_t chunks_used = (size_ + kChunkMask) >> kChunkBits;
    if (chunks_.size() > chunks_used + 1) chunks_.pop_back();
}

void DownloadTracker::NodeStore::clear() {
    chunks_.clear();
    size_ = 0;
}

template <DownloadTracker::Links DownloadTracker::Node::*links>
void DownloadTracker::NodeList<links>::push_back(NodeStore& nodes, uint32_t index) {
    Links& own = nodes[index].*links;
    own.prev = tail_;
    own.next = kNone;
    if (tail_ != kNone)
        (nodes[tail_].*links).next = index;
    else
        head_ = index;
    tail_ = index;
    ++size_;
}

template <DownloadTracker::Links DownloadTracker::Node::*links>
void DownloadTracker::NodeList<links>::remove(NodeStore& nodes, uint32_t index) {
    if (!contains(nodes, index)) return;
    Links& own = nodes[index].*links;
    if (own.prev != kNone)
        (nodes[own.prev].*links).next = own.next;
    else
        head_ = own.next;
    if (own.next != kNone)
        (nodes[own.next].*links).prev = own.prev;
    else
        tail_ = own.prev;
    own = Links{};
    --size_;
}

template <DownloadTracker::Links DownloadTracker::Node::*links>
void DownloadTracker::NodeList<links>::move_to_back(NodeStore& nodes, uint32_t index) {
    if (index == tail_) return;
    remove(nodes, index);
    push_back(nodes, index);
}

template <DownloadTracker::Links DownloadTracker::Node::*links>
void DownloadTracker::NodeList<links>::renumber(NodeStore& nodes, uint32_t from, uint32_t to) {
    const Links& own = nodes[to].*links;
    if (own.prev == kNone && head_ != from) return;  // not in this list
    if (own.prev != kNone)
        (nodes[own.prev].*links).next = to;
    else
        head_ = to;
    if (own.next != kNone)
        (nodes[own.next].*links).prev = to;
    else
        tail_ = to;
}

// ---- the tracker ----

uint32_t DownloadTracker::hash_of(const SharedString& path, const SharedString& etag, const SharedString& client,
                                  const SharedString& agent) {
    // Each text's hash was computed once, when it was interned: a key's hash
    // mixes four numbers, and its strings are not read again.
    uint64_t hash = path.hash();
    for (const uint32_t part : {etag.hash(), client.hash(), agent.hash()})
        hash = (hash ^ part) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
    hash ^= hash >> 29;
    return static_cast<uint32_t>(hash ^ (hash >> 32));
}

uint32_t DownloadTracker::find(const Key& key) const {
    return table_.find(hash_of(key), [&](uint32_t index) {
        const LogicalDownload& d = nodes_[index].download;
        return d.path == key.path && d.etag == key.etag && d.client_ip == key.client && d.user_agent == key.agent;
    });
}

const LogicalDownload* DownloadTracker::open_download_of(const smp_record& record) const {
    if (!is_download_record(record)) return nullptr;
    const DownloadKey of_record = download_key(record);
    const Key key{strings_.find(of_record.path), strings_.find(of_record.etag), strings_.find(of_record.client),
                  strings_.find(of_record.agent)};
    if (key.path.empty() || key.client.empty() || (!of_record.etag.empty() && key.etag.empty()) ||
        (!of_record.agent.empty() && key.agent.empty()))
        return nullptr;
    const uint32_t index = find(key);
    return index == kNone ? nullptr : &nodes_[index].download;
}

const LogicalDownload* DownloadTracker::add(const smp_record& record, uint64_t id_if_new, const char* geo) {
    if (!is_download_record(record)) return nullptr;
    const DownloadKey of_record = download_key(record);
    const std::string_view texts[] = {of_record.path, of_record.etag, of_record.client, of_record.agent};
    Key key{strings_.find(texts[0]), strings_.find(texts[1]), strings_.find(texts[2]), strings_.find(texts[3])};
    // A text the pool does not have is in no open download's key.
    const bool all_known = (texts[0].empty() || !key.path.empty()) && (texts[1].empty() || !key.etag.empty()) &&
                           (texts[2].empty() || !key.client.empty()) && (texts[3].empty() || !key.agent.empty());
    uint32_t index = all_known ? find(key) : kNone;
    // The same client and file start a new download past the idle window, or
    // with a whole-file request once every byte was delivered (downloading
    // it again). The old one is handed out by the next expire().
    // A request that began before the download's last activity is part of it,
    // however late its record arrives (aria2c's first, whole-file request
    // often ends after the segments that cut it short).
    if (index != kNone) {
        const LogicalDownload& old = nodes_[index].download;
        const bool again = record.status == 200 && old.completed() && record.start_us > old.last_us;
        if (record.start_us > idle_until(old.last_us) || again) {
            close(index);
            index = kNone;
        }
    }
    if (index == kNone) {
        // The texts the pool did not have go in now.
        for (auto [handle, text] : {std::pair{&key.path, texts[0]}, std::pair{&key.etag, texts[1]},
                                    std::pair{&key.client, texts[2]}, std::pair{&key.agent, texts[3]}})
            if (handle->empty()) *handle = strings_.intern(text);
        index = open(std::move(key), record, id_if_new);
    }
    by_activity_.move_to_back(nodes_, index);
    if (!changed_.contains(nodes_, index)) changed_.push_back(nodes_, index);
    LogicalDownload& download = nodes_[index].download;
    if (geo != nullptr && download.geo.empty()) download.geo = strings_.intern(geo);
    ++download.requests;
    for (size_t i = 0; i < record.interval_count; ++i) {
        const smp_interval& sent = record.intervals[i];
        download.delivered.add(sent.first, sent.last);
        download.bytes_sent += sent.last - sent.first + 1;
    }
    if (record.end_us >= record.start_us)
        download.active.add(static_cast<uint64_t>(record.start_us), static_cast<uint64_t>(record.end_us));
    // A resume is a request that began after every earlier one had ended: a
    // gap in the time the download was transferring. Counted from those
    // spans, not from the order the records arrive in: the cut request and
    // its resume, served by two workers, may reach the collector either way
    // round.
    const size_t spans = download.active.intervals().size();
    download.resumes = spans > 1 ? static_cast<uint32_t>(spans - 1) : 0;
    download.first_us = std::min(download.first_us, record.start_us);
    if (record.end_us >= download.last_us) {
        download.last_us = record.end_us;
        download.last_reason = record.reason;
    }
    return &download;
}

uint32_t DownloadTracker::open(Key&& key, const smp_record& record, uint64_t id) {
    LogicalDownload fresh;
    fresh.id = id;
    fresh.node = strings_.intern(or_empty(record.node));
    fresh.path = std::move(key.path);
    fresh.etag = std::move(key.etag);
    fresh.client_ip = std::move(key.client);
    fresh.user_agent = std::move(key.agent);
    fresh.file_size = static_cast<uint64_t>(record.file_size);
    fresh.first_us = record.start_us;
    // At the cap, the least recently active download ends here, early, to
    // make room: memory stays bounded whatever the clients send. (More than
    // one when a snapshot taken under a larger cap was loaded.)
    while (nodes_.size() >= max_open_ && by_activity_.front() != kNone) {
        const uint32_t oldest = by_activity_.front();
        nodes_[oldest].download.finished_early = true;
        ++finished_early_;
        close(oldest);
    }
    const uint32_t index = nodes_.push_back();
    nodes_[index].download = std::move(fresh);
    try {
        link(index);
    } catch (...) {
        nodes_.pop_back();
        throw;
    }
    return index;
}

void DownloadTracker::link(uint32_t index) {
    nodes_[index].hash = hash_of(nodes_[index].download);
    table_.insert(nodes_[index].hash, index, node_hash());
    by_activity_.push_back(nodes_, index);
    changed_.push_back(nodes_, index);
}

LogicalDownload DownloadTracker::take(uint32_t index) {
    table_.erase(nodes_[index].hash, index, node_hash());
    by_activity_.remove(nodes_, index);
    changed_.remove(nodes_, index);
    LogicalDownload taken = std::move(nodes_[index].download);
    const uint32_t last = nodes_.size() - 1;
    if (index != last) {
        nodes_[index] = std::move(nodes_[last]);
        by_activity_.renumber(nodes_, last, index);
        changed_.renumber(nodes_, last, index);
        table_.renumber(nodes_[index].hash, last, index);
    }
    nodes_.pop_back();
    return taken;
}

void DownloadTracker::expire(int64_t now_us, const std::function<void(const LogicalDownload&)>& finished) {
    for (const auto& download : finished_) finished(download);
    finished_.clear();
    // Oldest activity first: the scan stops at the first download still active.
    for (uint32_t oldest = by_activity_.front(); oldest != kNone; oldest = by_activity_.front()) {
        ++visited_;
        const LogicalDownload& download = nodes_[oldest].download;
        if (now_us <= idle_until(download.last_us)) break;
        finished(download);
        take(oldest);
    }
}

void DownloadTracker::finish_all(const std::function<void(const LogicalDownload&)>& finished) {
    expire(INT64_MIN, finished);  // those ended early
    for (uint32_t oldest = by_activity_.front(); oldest != kNone; oldest = by_activity_.front()) {
        finished(nodes_[oldest].download);
        take(oldest);
    }
}

void DownloadTracker::each_changed(const std::function<void(const LogicalDownload&)>& changed,
                                   int64_t began_before_us) {
    for (uint32_t index = changed_.front(), next = kNone; index != kNone; index = next) {
        ++visited_;
        next = changed_.next(nodes_, index);
        if (nodes_[index].download.first_us >= began_before_us) continue;
        changed_.remove(nodes_, index);
        changed(nodes_[index].download);
    }
}

std::vector<uint64_t> DownloadTracker::ids_by_activity() const {
    std::vector<uint64_t> ids;
    ids.reserve(by_activity_.size());
    for (uint32_t index = by_activity_.front(); index != kNone; index = by_activity_.next(nodes_, index))
        ids.push_back(nodes_[index].download.id);
    return ids;
}

// ---- snapshots ----
//
// The layout, every number in the host's byte order:
//   "SMPD", u32 version, u64 finished_early
//   u32 text count, then each text: u32 length, its bytes
//   u32 open count, then the open downloads, the least recently active first
//   u32 finished count, then the downloads finished but not handed out yet
// and a download is
//   u64 id, file_size, bytes_sent; i64 first_us, last_us; u32 requests, resumes
//   u32 node, client_ip, user_agent, path, etag, geo (version 2 on): 0 for the empty text, else
//       the text's number (1 for the first) in the table above
//   u32 last_reason, u8 finished_early (0 or 1)
//   u32 count and that many u64 pairs (first, last), delivered then active.
// A download is written from its node as it is (its texts by number, no
// look-up): a million take about a quarter of a second, 129 MB with client
// addresses of their own.

void DownloadTracker::save(std::string& out) const {
    size_t text_bytes = 0;
    for (uint32_t number = 0; number < strings_.size(); ++number) text_bytes += 4 + strings_.text(number).size();
    const size_t downloads = nodes_.size() + finished_.size();
    out.reserve(out.size() + 64 + text_bytes + downloads * (kMinSnapshotDownload + 2 * 16));
    SnapshotWriter writer(out);
    writer.put_bytes(kSnapshotMagic);
    writer.put(kSnapshotVersion);
    writer.put(finished_early_);
    writer.put(static_cast<uint32_t>(strings_.size()));
    for (uint32_t number = 0; number < strings_.size(); ++number) writer.put_text(strings_.text(number));
    writer.put(nodes_.size());
    for (uint32_t index = by_activity_.front(); index != kNone; index = by_activity_.next(nodes_, index))
        writer.put_download(nodes_[index].download);
    writer.put(static_cast<uint32_t>(finished_.size()));
    for (const LogicalDownload& download : finished_) writer.put_download(download);
    writer.flush();
}

bool DownloadTracker::load(std::string_view data) {
    clear();
    if (load_state(data)) return true;
    clear();
    return false;
}

bool DownloadTracker::load_state(std::string_view data) {
    SnapshotReader in(data);
    std::string_view magic;
    uint32_t version = 0;
    if (!in.get_bytes(kSnapshotMagic.size(), magic) || magic != kSnapshotMagic || !in.get(version) || version < 1 ||
        version > kSnapshotVersion || !in.get(finished_early_))
        return false;
    uint32_t text_count = 0;
    if (!in.get_count(sizeof(uint32_t), text_count)) return false;
    std::vector<SharedString> texts;
    texts.reserve(size_t{text_count} + 1);
    texts.emplace_back();
    for (uint32_t i = 0; i < text_count; ++i) {
        uint32_t length = 0;
        std::string_view text;
        if (!in.get(length) || !in.get_bytes(length, text)) return false;
        texts.push_back(strings_.intern(text));
    }
    std::vector<IntervalSet::Interval> scratch;
    uint32_t open_count = 0;
    if (!in.get_count(kMinSnapshotDownload, open_count)) return false;
    table_.reserve(open_count, node_hash());
    for (uint32_t i = 0; i < open_count; ++i) {
        LogicalDownload download;
        if (!in.get_download(texts, download, scratch, version)) return false;
        // Two open downloads of one key: not a tracker's state.
        if (find(Key{download.path, download.etag, download.client_ip, download.user_agent}) != kNone) return false;
        const uint32_t index = nodes_.push_back();
        nodes_[index].download = std::move(download);
        link(index);
    }
    uint32_t finished_count = 0;
    if (!in.get_count(kMinSnapshotDownload, finished_count)) return false;
    finished_.reserve(finished_count);
    for (uint32_t i = 0; i < finished_count; ++i) {
        LogicalDownload download;
        if (!in.get_download(texts, download, scratch, version)) return false;
        finished_.push_back(std::move(download));
    }
    return in.remaining() == 0;
}

void DownloadTracker::clear() {
    by_activity_.clear();
    changed_.clear();
    table_.clear();
    nodes_.clear();
    finished_.clear();
    finished_early_ = 0;
}

}  // namespace smp
