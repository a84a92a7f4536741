#include "download_key.hpp"

#include <functional>

namespace smp {
namespace {
std::string_view or_empty(const char* text) { return text != nullptr ? text : ""; }
}  // namespace

DownloadKey download_key(const smp_record& record) {
    // Behind a trusted proxy the client is the one it forwarded for.
    const char* client = record.forwarded_ip != nullptr ? record.forwarded_ip : record.client_ip;
    return {or_empty(record.path), or_empty(record.etag), or_empty(client), or_empty(record.user_agent)};
}

size_t hash_of(const DownloadKey& key) noexcept {
    const std::hash<std::string_view> hash;
    size_t seed = hash(key.path);
    for (const std::string_view part : {key.etag, key.client, key.agent})
        seed ^= hash(part) + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2);
    return seed;
}

}  // namespace smp
