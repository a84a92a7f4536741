#include "download_tracker.hpp"

#include <algorithm>
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

size_t DownloadTracker::Hash::operator()(const Key& key) const noexcept {
    const std::hash<std::string_view> hash;
    size_t seed = hash(key.path);
    for (const std::string_view part : {key.etag, key.client, key.agent})
        seed ^= hash(part) + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2);
    return seed;
}

const LogicalDownload* DownloadTracker::add(const smp_record& record, uint64_t id_if_new) {
    if (!is_download_record(record)) return nullptr;
    // Behind a trusted proxy the client is the one it forwarded for.
    const char* client = record.forwarded_ip != nullptr ? record.forwarded_ip : or_empty(record.client_ip);
    const Key key{record.path, record.etag, client, or_empty(record.user_agent)};
    auto found = open_.find(key);
    // The same client and file start a new download past the idle window, or
    // with a whole-file request once every byte was delivered (downloading
    // it again). The old one is handed out by the next expire().
    // A request that began before the download's last activity is part of it,
    // however late its record arrives (aria2c's first, whole-file request
    // often ends after the segments that cut it short).
    if (found != open_.end()) {
        const LogicalDownload& old = (*found)->download;
        const bool again = record.status == 200 && old.completed() && record.start_us > old.last_us;
        if (record.start_us > old.last_us + idle_window_us_ || again) {
            close(found);
            found = open_.end();
        }
    }
    Node& node = found != open_.end() ? **found : open(key, record, id_if_new);
    by_activity_.move_to_back(&node);
    if (!IntrusiveList<Node, &Node::changed>::contains(&node)) changed_.push_back(&node);
    LogicalDownload& download = node.download;
    // A resume: this request began after every earlier request had ended.
    if (download.requests > 0 && record.start_us > download.last_us) ++download.resumes;
    ++download.requests;
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

DownloadTracker::Node& DownloadTracker::open(const Key& key, const smp_record& record, uint64_t id) {
    // At the cap, the least recently active download ends here, early, to
    // make room: memory stays bounded whatever the clients send.
    if (open_.size() >= max_open_ && !by_activity_.empty()) {
        Node* oldest = by_activity_.front();
        oldest->download.finished_early = true;
        ++finished_early_;
        close(open_.find(oldest));
    }
    auto node = std::make_unique<Node>();
    LogicalDownload& fresh = node->download;
    fresh.id = id;
    fresh.node = or_empty(record.node);
    fresh.path = key.path;
    fresh.etag = key.etag;
    fresh.client_ip = key.client;
    fresh.user_agent = key.agent;
    fresh.file_size = static_cast<uint64_t>(record.file_size);
    fresh.first_us = record.start_us;
    node->hash = Hash{}(key);
    Node& added = *node;
    open_.insert(std::move(node));
    return added;
}

void DownloadTracker::close(Table::iterator it) {
    finished_.push_back(std::move((*it)->download));
    forget(it);
}

void DownloadTracker::forget(Table::iterator it) {
    Node* node = it->get();
    by_activity_.remove(node);
    changed_.remove(node);
    open_.erase(it);
}

void DownloadTracker::expire(int64_t now_us, const std::function<void(const LogicalDownload&)>& finished) {
    for (const auto& download : finished_) finished(download);
    finished_.clear();
    // Oldest activity first: the scan stops at the first download still active.
    while (Node* oldest = by_activity_.front()) {
        ++visited_;
        if (now_us <= oldest->download.last_us + idle_window_us_) break;
        finished(oldest->download);
        forget(open_.find(oldest));
    }
}

void DownloadTracker::each_changed(const std::function<void(const LogicalDownload&)>& changed) {
    while (Node* node = changed_.front()) {
        ++visited_;
        changed_.remove(node);
        changed(node->download);
    }
}

std::vector<uint64_t> DownloadTracker::ids_by_activity() const {
    std::vector<uint64_t> ids;
    ids.reserve(by_activity_.size());
    for (const Node* node = by_activity_.front(); node != nullptr; node = decltype(by_activity_)::next(node))
        ids.push_back(node->download.id);
    return ids;
}

}  // namespace smp
