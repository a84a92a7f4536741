#include "download_tracker.hpp"

#include <cstring>

namespace smp {
namespace {
const char* or_empty(const char* text) { return text != nullptr ? text : ""; }
}  // namespace

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

const LogicalDownload* DownloadTracker::add(const smp_record& record) {
    if (!is_download_record(record)) return nullptr;
    // Behind a trusted proxy the client is the one it forwarded for.
    const char* client = record.forwarded_ip != nullptr ? record.forwarded_ip : or_empty(record.client_ip);
    Key key{record.path, record.etag, client, or_empty(record.user_agent)};
    auto found = downloads_.find(key);
    // The same client and file start a new download past the idle window, or
    // with a whole-file request once every byte was delivered (downloading
    // it again). The old one is handed out by the next expire().
    // A request that began before the download's last activity is part of it,
    // however late its record arrives (aria2c's first, whole-file request
    // often ends after the segments that cut it short).
    const bool again = record.status == 200 && found != downloads_.end() && found->second.completed() &&
                       record.start_us > found->second.last_us;
    if (found != downloads_.end() && (record.start_us > found->second.last_us + idle_window_us_ || again)) {
        finished_.push_back(std::move(found->second));
        downloads_.erase(found);
        found = downloads_.end();
    }
    if (found == downloads_.end()) {
        LogicalDownload fresh;
        fresh.id = next_id_++;
        fresh.node = or_empty(record.node);
        fresh.path = record.path;
        fresh.etag = record.etag;
        fresh.client_ip = client;
        fresh.user_agent = or_empty(record.user_agent);
        fresh.file_size = static_cast<uint64_t>(record.file_size);
        fresh.first_us = record.start_us;
        found = downloads_.emplace(std::move(key), std::move(fresh)).first;
    }
    LogicalDownload& download = found->second;
    // A resume: this request began after every earlier request had ended.
    if (download.requests > 0 && record.start_us > download.last_us) ++download.resumes;
    ++download.requests;
    download.changed = true;
    for (size_t i = 0; i < record.interval_count; ++i) {
        const smp_interval& sent = record.intervals[i];
        download.delivered.add(sent.first, sent.last);
        download.bytes_sent += sent.last - sent.first + 1;
    }
    if (record.end_us >= record.start_us)
        download.active.add(static_cast<uint64_t>(record.start_us), static_cast<uint64_t>(record.end_us));
    download.first_us = std::min(download.first_us, record.start_us);
    if (record.end_us >= download.last_us) {
        download.last_us = record.end_us;
        download.last_reason = record.reason;
    }
    return &download;
}

void DownloadTracker::expire(int64_t now_us, const std::function<void(const LogicalDownload&)>& finished) {
    for (const auto& download : finished_) finished(download);
    finished_.clear();
    for (auto it = downloads_.begin(); it != downloads_.end();) {
        if (now_us > it->second.last_us + idle_window_us_) {
            finished(it->second);
            it = downloads_.erase(it);
        } else {
            ++it;
        }
    }
}

void DownloadTracker::each_changed(const std::function<void(const LogicalDownload&)>& changed) {
    for (auto& [key, download] : downloads_) {
        if (!download.changed) continue;
        download.changed = false;
        changed(download);
    }
}

}  // namespace smp
