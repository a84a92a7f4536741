// Logical downloads: every 200/206 GET of the same file (path and strong
// ETag) by the same client (IP and user agent) within the idle window is one
// download, however many requests, resumes and parallel segments it took.
// The union of the byte intervals delivered says whether every byte reached
// the client.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "index_table.hpp"
#include "interval_set.hpp"
#include "smp_module.h"
#include "string_pool.hpp"

namespace smp {

// A million of these are open at once in the stats collector, so the layout
// is counted: 152 bytes. Five 8-byte fields (id, file size, bytes sent,
// first and last), two interval sets of 24 bytes (one interval inline), six
// 8-byte handles to strings interned in the tracker's pool (held once however
// many downloads share them), then requests, resumes and the last reason (4
// bytes each) and the finished_early flag, padded to 8.
//
// The strings are the tracker's: they read as std::string_view (`.view()`),
// and a copy of a download keeps them alive.
struct LogicalDownload {
    uint64_t id = 0;
    uint64_t file_size = 0;
    uint64_t bytes_sent = 0;  // file bytes sent, counting repeats
    int64_t first_us = 0;     // start of the first request
    int64_t last_us = 0;      // end of the latest request
    IntervalSet delivered;    // bytes of the file
    IntervalSet active;       // microseconds in which a request was transferring
    SharedString node;        // the server's name, from its first request
    SharedString client_ip;   // as it came: the forwarded address behind a trusted proxy
    SharedString user_agent;
    SharedString path;
    SharedString etag;
    // The client's place as its worker found it, when the address came
    // shortened (privacy.anonymize_ip: encode_geo's text); else empty and
    // the place is looked up from client_ip.
    SharedString geo;
    uint32_t requests = 0;
    uint32_t resumes = 0;  // requests that began after every earlier one had ended: the gaps in `active`
    smp_end_reason last_reason = SMP_END_COMPLETED;
    // Finished before its idle window ran out, to keep the open downloads
    // under the cap: its end is not known.
    bool finished_early = false;

    uint64_t distinct_bytes() const { return delivered.size(); }
    uint64_t wasted_bytes() const { return bytes_sent - delivered.size(); }
    bool completed() const { return file_size == 0 ? requests > 0 : delivered.covers(0, file_size - 1); }
    double coverage() const;  // 0..1
    int64_t wall_us() const { return last_us - first_us; }
    // The time spans of requests are [start, end] in microseconds; their
    // length is end - start, not the count of microseconds in them.
    int64_t active_us() const { return static_cast<int64_t>(active.size() - active.intervals().size()); }
    double average_speed() const;  // distinct bytes per second of active time
    // completed when every byte was delivered; else tracking_cap when it was
    // finished early, at the cap; else the reason of the last request, or
    // incomplete when that one ended well.
    smp_end_reason reason() const {
        if (completed()) return SMP_END_COMPLETED;
        if (finished_early) return SMP_END_TRACKING_CAP;
        return last_reason == SMP_END_COMPLETED ? SMP_END_INCOMPLETE : last_reason;
    }
};

// True for the records that take part in downloads: GET answered 200 or 206
// with a file and an ETag. HEAD, 304, 404, 416 and the rest are requests only.
bool is_download_record(const smp_record& record);

// The open downloads, in a hash table by key and in two lists threaded
// through them: by last activity (the least recently active first), and the
// ones a request joined since the last each_changed(). So the collector's
// tick costs by what changed, not by what is open: the idle scan stops at
// the first download still active, and the changed ones are a list.
//
// What an open download costs: its node, 176 bytes (the download, four
// 4-byte list links and its key's hash), in chunks of 4096 nodes; 5 to 11
// bytes of the hash table (4-byte slots, between three eighths and three
// quarters full); and its strings, of which only the client address is
// usually its own: 64 bytes for an IPv4 address (a 48-byte malloc chunk for
// the pool's 24-byte entry and the text, a 4-byte slot in the pool's table,
// an 8-byte place in its list). Measured in download_tracker_test.cpp with malloc's counts:
// 194 bytes a download with every string shared, 250 with a million client
// addresses of their own (688 with std::string and std::unordered_set).
// Nodes are numbered densely: a node that goes takes the last one's place,
// so the memory of a burst of downloads goes back to malloc as they end.
class DownloadTracker {
   public:
    static constexpr size_t kNoCap = std::numeric_limits<size_t>::max();

    // A new download past `max_open` open ones finishes the least recently
    // active one early (tracking.max_open_downloads).
    explicit DownloadTracker(int64_t idle_window_us, size_t max_open = kNoCap)
        : idle_window_us_(idle_window_us), max_open_(max_open) {}
    DownloadTracker(const DownloadTracker&) = delete;
    DownloadTracker& operator=(const DownloadTracker&) = delete;

    // Adds a finished request; returns the download it joined, or nullptr
    // when the record is not part of a download. A download the record opens
    // gets the id `id_if_new`. The pointer is valid until the next call
    // that changes the tracker.
    // `geo`: the record's place (DecodedRecord::geo), or NULL.
    const LogicalDownload* add(const smp_record& record, uint64_t id_if_new, const char* geo = nullptr);
    // Hands every download idle for longer than the window (and those ended
    // early since the last call) to `finished`, and forgets it. A download's
    // place in the idle order is when its latest request was added, so one
    // whose records came late waits at most a window after that.
    void expire(int64_t now_us, const std::function<void(const LogicalDownload&)>& finished);
    // Hands every download to `finished`: the server stops.
    void finish_all(const std::function<void(const LogicalDownload&)>& finished);
    // Hands every open download that a request joined since the last call to
    // `changed`: stores show downloads as they grow, not only once ended.
    // One that began at or after `began_before_us` waits for a later call:
    // most downloads of small files end within a second (a fetch again, the
    // idle window, the cap) and are then handed out once, finished, by
    // expire(), rather than once open and again finished.
    void each_changed(const std::function<void(const LogicalDownload&)>& changed,
                      int64_t began_before_us = std::numeric_limits<int64_t>::max());
    size_t open_downloads() const { return nodes_.size(); }
    // The open download a request of `record` would join now, or nullptr
    // (the dashboard's downloads in progress: what ended requests already
    // delivered). Valid until the next call that changes the tracker.
    const LogicalDownload* open_download_of(const smp_record& record) const;
    size_t finished_downloads() const { return finished_.size(); }
    size_t max_open() const { return max_open_; }
    // Downloads finished early to stay under the cap, since the start.
    uint64_t finished_early() const { return finished_early_; }
    // Open downloads that expire() and each_changed() looked at, since the
    // start: what the ticks cost, for tests.
    uint64_t visited() const { return visited_; }
    // The ids of the open downloads, the least recently active first.
    std::vector<uint64_t> ids_by_activity() const;

    // Appends the whole state to `out`: the open downloads in their order of
    // activity, the finished ones expire() has not handed out yet, and the
    // count of those finished early. The idle window and the cap are the
    // configuration's, not the state's. The bytes are in the host's order:
    // the snapshot is read back on the machine that wrote it.
    void save(std::string& out) const;
    // Replaces the state with the snapshot `data`; every open download it
    // holds counts as changed. False, and the tracker empty, when `data` is
    // not a whole snapshot of this format.
    bool load(std::string_view data);

   private:
    static constexpr uint32_t kNone = IndexTable::kNone;

    struct Links {
        uint32_t prev = kNone;
        uint32_t next = kNone;
    };
    struct Node {
        LogicalDownload download;
        Links by_activity;
        Links changed;
        // hash_of(download), kept: the table asks for the hash of every
        // entry it moves when one is erased, and computing it again reads
        // the download's four strings, four cache misses on a busy tracker.
        uint32_t hash = 0;
    };
    static_assert(sizeof(void*) != 8 || sizeof(Node) == 176, "the layout counted above");

    // The nodes, numbered 0 to size() - 1, in chunks that do not move: a
    // node's number is its place, and the lists and the table hold numbers.
    class NodeStore {
       public:
        Node& operator[](uint32_t index) { return chunks_[index >> kChunkBits][index & kChunkMask]; }
        const Node& operator[](uint32_t index) const { return chunks_[index >> kChunkBits][index & kChunkMask]; }
        uint32_t size() const { return size_; }
        // A fresh node at the end; its number.
        uint32_t push_back();
        // Resets the last node; a chunk left unused beyond a spare one is freed.
        void pop_back();
        void clear();

       private:
        static constexpr int kChunkBits = 12;
        static constexpr uint32_t kChunkMask = (1u << kChunkBits) - 1;
        std::vector<std::unique_ptr<Node[]>> chunks_;
        uint32_t size_ = 0;
    };

    // A doubly linked list of node numbers, threaded through the nodes'
    // `links`, so that linking, unlinking and moving to the back cost no
    // allocation and no search.
    template <Links Node::*links>
    class NodeList {
       public:
        uint32_t front() const { return head_; }
        size_t size() const { return size_; }
        bool contains(const NodeStore& nodes, uint32_t index) const {
            return (nodes[index].*links).prev != kNone || head_ == index;
        }
        static uint32_t next(const NodeStore& nodes, uint32_t index) { return (nodes[index].*links).next; }
        void push_back(NodeStore& nodes, uint32_t index);
        // Does nothing when the node is not in the list.
        void remove(NodeStore& nodes, uint32_t index);
        void move_to_back(NodeStore& nodes, uint32_t index);
        // The node numbered `from` is now at `to`, links and all: its
        // neighbours point there.
        void renumber(NodeStore& nodes, uint32_t from, uint32_t to);
        void clear() { *this = NodeList(); }

       private:
        uint32_t head_ = kNone;
        uint32_t tail_ = kNone;
        size_t size_ = 0;
    };

    // A download's key: the handles of its strings in the pool.
    struct Key {
        SharedString path, etag, client, agent;
    };
    static uint32_t hash_of(const SharedString& path, const SharedString& etag, const SharedString& client,
                            const SharedString& agent);
    static uint32_t hash_of(const Key& key) { return hash_of(key.path, key.etag, key.client, key.agent); }
    static uint32_t hash_of(const LogicalDownload& d) { return hash_of(d.path, d.etag, d.client_ip, d.user_agent); }
    auto node_hash() const {
        return [this](uint32_t index) { return nodes_[index].hash; };
    }
    uint32_t find(const Key& key) const;
    // The end of the idle window of a download last active at `last_us`;
    // saturated, as the times come from modules and snapshots.
    int64_t idle_until(int64_t last_us) const {
        return last_us > std::numeric_limits<int64_t>::max() - idle_window_us_ ? std::numeric_limits<int64_t>::max()
                                                                               : last_us + idle_window_us_;
    }

    uint32_t open(Key&& key, const smp_record& record, uint64_t id);
    // Links a node whose download is filled in: the table and both lists.
    void link(uint32_t index);
    // Unlinks the download from everything and returns it; the last node
    // takes its place.
    LogicalDownload take(uint32_t index);
    // Moves the download to finished_, handed out by the next expire().
    void close(uint32_t index) { finished_.push_back(take(index)); }
    void clear();
    bool load_state(std::string_view data);

    int64_t idle_window_us_;
    size_t max_open_;
    // Declared before the downloads that hold its strings, so that it goes
    // after them.
    StringPool strings_;
    NodeStore nodes_;
    IndexTable table_;
    NodeList<&Node::by_activity> by_activity_;
    NodeList<&Node::changed> changed_;
    std::vector<LogicalDownload> finished_;  // ended early, handed out by the next expire()
    uint64_t finished_early_ = 0;
    uint64_t visited_ = 0;
};

}  // namespace smp
