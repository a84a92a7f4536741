// What makes requests one logical download: the same file (path and strong
// ETag) by the same client (IP, the forwarded one behind a trusted proxy,
// and user agent). Written once: the collector merges by it, and a worker
// picks the collector shard of a record by it, so that every request of one
// download meets in one collector.
#pragma once

#include <cstddef>
#include <string_view>

#include "smp_module.h"

namespace smp {

struct DownloadKey {
    std::string_view path, etag, client, agent;
    bool operator==(const DownloadKey&) const = default;
};

DownloadKey download_key(const smp_record& record);
size_t hash_of(const DownloadKey& key) noexcept;

}  // namespace smp
