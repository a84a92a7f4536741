// Logical downloads: every 200/206 GET of the same file (path and strong
// ETag) by the same client (IP and user agent) within the idle window is one
// download, however many requests, resumes and parallel segments it took.
// The union of the byte intervals delivered says whether every byte reached
// the client.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "interval_set.hpp"
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
    bool changed = false;  // a request joined since the last each_changed()

    uint64_t distinct_bytes() const { return delivered.size(); }
    uint64_t wasted_bytes() const { return bytes_sent - delivered.size(); }
    bool completed() const { return file_size == 0 ? requests > 0 : delivered.covers(0, file_size - 1); }
    double coverage() const;  // 0..1
    int64_t wall_us() const { return last_us - first_us; }
    // The time spans of requests are [start, end] in microseconds; their
    // length is end - start, not the count of microseconds in them.
    int64_t active_us() const { return static_cast<int64_t>(active.size() - active.intervals().size()); }
    double average_speed() const;  // distinct bytes per second of active time
    // completed when every byte was delivered; else the reason of the last
    // request, or incomplete when that one ended well.
    smp_end_reason reason() const {
        if (completed()) return SMP_END_COMPLETED;
        return last_reason == SMP_END_COMPLETED ? SMP_END_INCOMPLETE : last_reason;
    }
};

// True for the records that take part in downloads: GET answered 200 or 206
// with a file and an ETag. HEAD, 304, 404, 416 and the rest are requests only.
bool is_download_record(const smp_record& record);

class DownloadTracker {
   public:
    // Ids count up from `first_id`: the collector starts them at its start
    // time in microseconds, so a restarted collector does not reuse them.
    explicit DownloadTracker(int64_t idle_window_us, uint64_t first_id = 1)
        : idle_window_us_(idle_window_us), next_id_(first_id) {}

    // Adds a finished request; returns the download it joined, or nullptr
    // when the record is not part of a download.
    const LogicalDownload* add(const smp_record& record);
    // Hands every download idle for longer than the window to `finished`,
    // and forgets it.
    void expire(int64_t now_us, const std::function<void(const LogicalDownload&)>& finished);
    // Hands every open download that a request joined since the last call to
    // `changed`: stores show downloads as they grow, not only once ended.
    void each_changed(const std::function<void(const LogicalDownload&)>& changed);
    size_t open_downloads() const { return downloads_.size(); }
    size_t finished_downloads() const { return finished_.size(); }

   private:
    using Key = std::tuple<std::string, std::string, std::string, std::string>;  // path, etag, ip, agent
    int64_t idle_window_us_;
    uint64_t next_id_;
    std::map<Key, LogicalDownload> downloads_;
    std::vector<LogicalDownload> finished_;  // ended early, handed out by the next expire()
};

}  // namespace smp
