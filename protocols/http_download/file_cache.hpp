// Open files of one worker, cached with their validators so that a hot file
// costs no open/fstat/close per request (as nginx's open_file_cache).
// Entries are revalidated after `valid_ms`: a replaced or changed file is
// seen within that time.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "conditional.hpp"
#include "mime.hpp"

namespace smp::http {

struct OpenFile {
    int fd = -1;
    uint64_t size = 0;
    int64_t mtime_s = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;  // a change of its permissions, owner or links moves it
    dev_t device = 0;
    ino_t inode = 0;
    std::string etag;  // strong, with quotes: "<size hex>-<mtime ns hex>"
    char last_modified[kHttpDateLength] = {};
    std::string_view content_type;
    std::string key;  // the path relative to the root
    uint64_t validated_ms = 0;
    int references = 0;
    bool cached = true;  // false once evicted: closed when the last reference goes
};

enum class OpenResult { ok, not_found, forbidden, is_directory, error };

// The one rule of what is served beneath the root, asked by the file cache
// and by the directory listings (autoindex.hpp), so that a listing shows
// only what a request for it would get. `path` (relative, normalised; ""
// is the root) is opened with openat2(2) RESOLVE_BENEATH: symlinks that
// lead out of the root and absolute symlinks are refused. ok for a regular
// file and is_directory for a directory, with `fd` open and `info` its
// fstat (the caller closes `fd`); anything else (a FIFO, a socket, a
// device) is forbidden, and `fd` is -1.
OpenResult open_served(int root_fd, std::string_view path, int& fd, struct stat& info);

class FileCache {
   public:
    FileCache(int root_fd, const MimeTypes& types, size_t capacity, uint64_t valid_ms)
        : root_fd_(root_fd), types_(types), capacity_(capacity), valid_ms_(valid_ms) {}
    ~FileCache();
    FileCache(const FileCache&) = delete;
    FileCache& operator=(const FileCache&) = delete;

    // Opens `path` (relative, normalised) beneath the root: symlinks that
    // lead out of it and absolute symlinks are refused. On ok, `file` holds
    // a reference to give back with release().
    OpenResult acquire(std::string_view path, uint64_t now_ms, OpenFile*& file);
    void release(OpenFile* file);

   private:
    OpenResult open_beneath(std::string_view path, OpenFile& file) const;
    void evict_beyond_capacity();

    int root_fd_;
    const MimeTypes& types_;
    size_t capacity_;
    uint64_t valid_ms_;
    std::list<OpenFile> lru_;  // most recently used first
    std::unordered_map<std::string_view, std::list<OpenFile>::iterator> index_;
};

// The strong validator of a file: the same for every worker and restart.
std::string make_etag(uint64_t size, int64_t mtime_ns);

// The name of one version of a file in the cache that servers share: the path
// (or, when it is long or has bytes a memcached key cannot, a 128-bit hash of
// it) and the ETag's size and mtime.
std::string shared_cache_key(std::string_view path, std::string_view etag);

}  // namespace smp::http
