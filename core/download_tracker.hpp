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
#include <unordered_set>
#include <vector>

#include "interval_set.hpp"
#include "intrusive_list.hpp"
#include "smp_module.h"

namespace smp {

struct LogicalDownload {
    uint64_t id = 0;
    std::string node;  // the server's name, from its first request
    std::string client_ip;
    std::string user_agent;
    std::string path;
    std::string etag;
    uint64_t file_size = 0;
    IntervalSet delivered;    // bytes of the file
    IntervalSet active;       // microseconds in which a request was transferring
    uint64_t bytes_sent = 0;  // file bytes sent, counting repeats
    uint32_t requests = 0;
    uint32_t resumes = 0;  // requests that began after every earlier one had ended
    int64_t first_us = 0;  // start of the first request
    int64_t last_us = 0;   // end of the latest request
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
class DownloadTracker {
   public:
    static constexpr size_t kNoCap = std::numeric_limits<size_t>::max();

    // Ids count up from `first_id`: the collector starts them at its start
    // time in microseconds, so a restarted collector does not reuse them.
    // A new download past `max_open` open ones finishes the least recently
    // active one early (tracking.max_open_downloads).
    explicit DownloadTracker(int64_t idle_window_us, size_t max_open = kNoCap)
        : idle_window_us_(idle_window_us), max_open_(max_open) {}
    DownloadTracker(const DownloadTracker&) = delete;
    DownloadTracker& operator=(const DownloadTracker&) = delete;

    // Adds a finished request; returns the download it joined, or nullptr
    // when the record is not part of a download.
    const LogicalDownload* add(const smp_record& record, uint64_t id_if_new = 0);
    // PLACEHOLDER until the compact tracker lands: saves nothing.
    void save(std::string& out) const { (void)out; }
    bool load(std::string_view data) { return data.empty(); }
    // Hands every download idle for longer than the window (and those ended
    // early since the last call) to `finished`, and forgets it. A download's
    // place in the idle order is when its latest request was added, so one
    // whose records came late waits at most a window after that.
    void expire(int64_t now_us, const std::function<void(const LogicalDownload&)>& finished);
    // Hands every open download that a request joined since the last call to
    // `changed`: stores show downloads as they grow, not only once ended.
    void each_changed(const std::function<void(const LogicalDownload&)>& changed);
    size_t open_downloads() const { return open_.size(); }
    size_t finished_downloads() const { return finished_.size(); }
    size_t max_open() const { return max_open_; }
    // Downloads finished early to stay under the cap, since the start.
    uint64_t finished_early() const { return finished_early_; }
    // Open downloads that expire() and each_changed() looked at, since the
    // start: what the ticks cost, for tests.
    uint64_t visited() const { return visited_; }
    // The ids of the open downloads, the least recently active first.
    std::vector<uint64_t> ids_by_activity() const;

   private:
    struct Key {
        std::string_view path, etag, client, agent;
        bool operator==(const Key&) const = default;
    };
    struct Node {
        LogicalDownload download;
        size_t hash = 0;
        ListLinks<Node> by_activity;
        ListLinks<Node> changed;
        Key key() const { return {download.path, download.etag, download.client_ip, download.user_agent}; }
    };
    // Looked up by a Key of the record's strings, without copying them.
    struct Hash {
        using is_transparent = void;
        size_t operator()(const Key& key) const noexcept;
        size_t operator()(const std::unique_ptr<Node>& node) const noexcept { return node->hash; }
        size_t operator()(const Node* node) const noexcept { return node->hash; }
    };
    struct Equal {
        using is_transparent = void;
        template <typename A, typename B>
        bool operator()(const A& a, const B& b) const noexcept {
            return key_of(a) == key_of(b);
        }
        static Key key_of(const Key& key) { return key; }
        static Key key_of(const std::unique_ptr<Node>& node) { return node->key(); }
        static Key key_of(const Node* node) { return node->key(); }
    };
    using Table = std::unordered_set<std::unique_ptr<Node>, Hash, Equal>;

    Node& open(const Key& key, const smp_record& record, uint64_t id);
    // Moves the download to finished_ and forgets it.
    void close(Table::iterator it);
    void forget(Table::iterator it);

    int64_t idle_window_us_;
    size_t max_open_;
    Table open_;
    IntrusiveList<Node, &Node::by_activity> by_activity_;
    IntrusiveList<Node, &Node::changed> changed_;
    std::vector<LogicalDownload> finished_;  // ended early, handed out by the next expire()
    uint64_t finished_early_ = 0;
    uint64_t visited_ = 0;
};

}  // namespace smp
