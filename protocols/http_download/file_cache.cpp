#include "file_cache.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "limits.hpp"

namespace smp::http {
namespace {

// openat2(2) with RESOLVE_BENEATH: the kernel refuses any path, ".." or
// symlink that resolves outside the root, with no race between check and use.
// O_NONBLOCK: opening a FIFO would otherwise wait for a writer (it is then
// refused as not a regular file); regular files ignore the flag.
int open_beneath_root(int root_fd, const char* path) {
    open_how how{};
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(syscall(SYS_openat2, root_fd, path, &how, sizeof how));
}

int64_t nanoseconds(const timespec& time) { return time.tv_sec * 1'000'000'000LL + time.tv_nsec; }

OpenResult from_errno(int error) {
    switch (error) {
        case ENOENT:
        case ENOTDIR:
        case ENAMETOOLONG: return OpenResult::not_found;
        case EACCES:
        case EPERM:
        case EXDEV:  // the path resolved outside the root
        case ELOOP: return OpenResult::forbidden;
        default: return OpenResult::error;
    }
}

}  // namespace

std::string make_etag(uint64_t size, int64_t mtime_ns) {
    char text[48];
    std::snprintf(text, sizeof text, "\"%llx-%llx\"", static_cast<unsigned long long>(size),
                  static_cast<unsigned long long>(mtime_ns));
    return text;
}

std::string shared_cache_key(std::string_view path, std::string_view etag) {
    constexpr size_t kLongestPlainPath = 160;  // with prefix and ETag, well inside memcached's 250
    const bool plain = path.size() <= kLongestPlainPath &&
                       std::all_of(path.begin(), path.end(), [](char c) { return c > ' ' && c < 0x7f; });
    std::string key = "f:";
    if (plain) {
        key += path;
    } else {
        char hash[40];
        std::snprintf(hash, sizeof hash, "#%016llx%016llx",
                      static_cast<unsigned long long>(limit_key("cache-path", path)),
                      static_cast<unsigned long long>(limit_key("cache-path-2", path, path)));
        key += hash;
    }
    key += ':';
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
    key += etag;
    return key;
}

FileCache::~FileCache() {
    for (auto& file : lru_)
        if (file.fd >= 0) close(file.fd);
}

OpenResult open_served(int root_fd, std::string_view path, int& fd, struct stat& info) {
    const std::string name(path.empty() ? "." : path);
    fd = open_beneath_root(root_fd, name.c_str());
    if (fd < 0) return from_errno(errno);
    if (fstat(fd, &info) != 0) {
        const int error = errno;
        close(fd);
        fd = -1;
        return from_errno(error);
    }
    if (S_ISREG(info.st_mode)) return OpenResult::ok;
    if (S_ISDIR(info.st_mode)) return OpenResult::is_directory;
    close(fd);
    fd = -1;
    return OpenResult::forbidden;
}

OpenResult FileCache::open_beneath(std::string_view path, OpenFile& file) const {
    int fd = -1;
    struct stat info {};
    const OpenResult result = open_served(root_fd_, path, fd, info);
    if (result != OpenResult::ok) {
        if (fd >= 0) close(fd);
        return result;
    }
    file.fd = fd;
    file.size = static_cast<uint64_t>(info.st_size);
    file.mtime_s = info.st_mtim.tv_sec;
    file.mtime_ns = nanoseconds(info.st_mtim);
    file.ctime_ns = nanoseconds(info.st_ctim);
    file.device = info.st_dev;
    file.inode = info.st_ino;
    file.etag = make_etag(file.size, file.mtime_ns);
    format_http_date(file.mtime_s, file.last_modified);
    file.content_type = types_.lookup(path);
    return OpenResult::ok;
}

OpenResult FileCache::acquire(std::string_view path, uint64_t now_ms, OpenFile*& file) {
    if (auto found = index_.find(path); found != index_.end()) {
        auto entry = found->second;
        const auto keep = [&] {
            lru_.splice(lru_.begin(), lru_, entry);
            ++entry->references;
            file = &*entry;
            return OpenResult::ok;
        };
        // Within the validity time one fstat of the open file still catches a
        // file rewritten in place; a file replaced by rename is seen at the
        // next revalidation, and until then its old, complete content is served.
        struct stat info {};
        const bool unchanged = fstat(entry->fd, &info) == 0 && static_cast<uint64_t>(info.st_size) == entry->size &&
                               nanoseconds(info.st_mtim) == entry->mtime_ns;
        if (unchanged && now_ms - entry->validated_ms < valid_ms_) return keep();
        // Expired: is the path still this file? One stat of the path tells,
        // without an open and a close: its directories are searched as an
        // open searches them, and the same device, inode, size, mtime and
        // ctime (which a chmod, chown or link change moves) is the file
        // opened before beneath the root, as readable as it was. A symlink
        // now leading elsewhere, out of the root too, finds another inode.
        // The same file keeps its entry; anything else is opened again, and
        // a changed file leaves the cache (closed once its transfers end).
        if (unchanged) {
            struct stat at_path {};
            if (fstatat(root_fd_, entry->key.c_str(), &at_path, 0) == 0 && at_path.st_ino == entry->inode &&
                at_path.st_dev == entry->device && static_cast<uint64_t>(at_path.st_size) == entry->size &&
                nanoseconds(at_path.st_mtim) == entry->mtime_ns && nanoseconds(at_path.st_ctim) == entry->ctime_ns) {
                entry->validated_ms = now_ms;
                return keep();
            }
        }
        OpenFile fresh;
        const OpenResult result = open_beneath(path, fresh);
        if (result == OpenResult::ok && fresh.inode == entry->inode && fresh.device == entry->device &&
            fresh.size == entry->size && fresh.mtime_ns == entry->mtime_ns) {
            close(fresh.fd);
            entry->ctime_ns = fresh.ctime_ns;
            entry->validated_ms = now_ms;
            return keep();
        }
        if (fresh.fd >= 0) close(fresh.fd);
        index_.erase(found);
        entry->cached = false;
        if (entry->references == 0) {
            close(entry->fd);
            lru_.erase(entry);
        }
        if (result != OpenResult::ok) return result;
    }
    OpenFile opened;
    const OpenResult result = open_beneath(path, opened);
    if (result != OpenResult::ok) return result;
    opened.key = path;
    opened.validated_ms = now_ms;
    opened.references = 1;
    lru_.push_front(std::move(opened));
    index_.emplace(lru_.front().key, lru_.begin());
    file = &lru_.front();
    evict_beyond_capacity();
    return OpenResult::ok;
}

void FileCache::release(OpenFile* file) {
    --file->references;
    if (file->references > 0 || file->cached) return;
    close(file->fd);
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
        if (&*it == file) {
            lru_.erase(it);
            return;
        }
    }
}

void FileCache::evict_beyond_capacity() {
    // Walk from the least recently used end; entries still sending stay.
    auto it = lru_.end();
    while (index_.size() > capacity_ && it != lru_.begin()) {
        --it;
        if (!it->cached || it->references > 0) continue;
        index_.erase(it->key);
        close(it->fd);
        it = lru_.erase(it);
    }
}

}  // namespace smp::http
