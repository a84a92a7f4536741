#include "spool.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "byte_codec.hpp"

namespace smp {
namespace {

constexpr uint32_t kEntryMagic = 0x534d5331;             // "SMS1"
constexpr uint64_t kSegmentBytes = 64ull * 1024 * 1024;  // a new segment past this size
constexpr uint32_t kMaxEntryBytes = 1u << 30;

struct EntryHeader {
    uint32_t magic;
    uint32_t length;
    uint64_t checksum;  // FNV-1a of the payload
};

class File {
   public:
    explicit File(int fd) : fd_(fd) {}
    ~File() {
        if (fd_ >= 0) ::close(fd_);
    }
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    int get() const { return fd_; }

   private:
    int fd_;
};

bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        const ssize_t n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

bool read_all(int fd, uint64_t offset, char* data, size_t size) {
    while (size > 0) {
        const ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        size -= static_cast<size_t>(n);
        offset += static_cast<uint64_t>(n);
    }
    return true;
}

}  // namespace

Spool::Spool(std::string dir) : dir_(std::move(dir)) {
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(dir_, error)) {
        const std::string name = entry.path().filename().string();
        if (name.size() != 26 || !name.ends_with(".spool")) continue;
        const uint64_t counter = std::strtoull(name.c_str(), nullptr, 10);
        if (counter > 0) segments_.push_back(counter);
    }
    std::sort(segments_.begin(), segments_.end());
    if (!segments_.empty()) next_segment_ = segments_.back() + 1;
}

uint64_t Spool::bytes_on_disk() const {
    uint64_t bytes = 0;
    for (const uint64_t segment : segments_) {
        struct stat st {};
        if (::stat(fmt::format("{}/{:020}.spool", dir_, segment).c_str(), &st) == 0)
            bytes += static_cast<uint64_t>(st.st_size);
    }
    return bytes > read_offset_ ? bytes - read_offset_ : 0;
}

void Spool::push(const Batch& batch) {
    // Order: what waits in memory goes to disk first, and nothing passes it.
    while (!memory_.empty() && write(memory_.front())) memory_.pop_front();
    if (memory_.empty() && write(batch)) return;
    memory_.push_back(batch.copy());  // kept for as long as the disk refuses it
}

bool Spool::write(const Batch& batch) {
    const std::string payload = encode_batch(batch);
    std::string entry;
    entry.reserve(sizeof(EntryHeader) + payload.size());
    const EntryHeader header{kEntryMagic, static_cast<uint32_t>(payload.size()), fnv1a(payload)};
    entry.append(reinterpret_cast<const char*>(&header), sizeof header);
    entry += payload;

    std::error_code ignored;
    std::filesystem::create_directories(dir_, ignored);
    // A segment of an earlier run is never appended to: it may end in a torn write.
    const bool fresh = !writing_newest_ || segments_.empty();
    if (fresh) {
        segments_.push_back(next_segment_++);
        writing_newest_ = true;
    }
    const std::string path = fmt::format("{}/{:020}.spool", dir_, segments_.back());
    File file(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
    struct stat st {};
    bool written = file.get() >= 0 && ::fstat(file.get(), &st) == 0;
    written = written && write_all(file.get(), entry.data(), entry.size()) && ::fdatasync(file.get()) == 0;
    if (!written) {
        const int saved = errno;
        // Leave no half entry behind, and no empty new segment.
        if (file.get() >= 0 && ::ftruncate(file.get(), st.st_size) == 0 && st.st_size == 0) ::unlink(path.c_str());
        if (fresh && st.st_size == 0) segments_.pop_back();
        writing_newest_ = false;
        if (!disk_failing_)
            spdlog::error("spool {}: cannot write ({}): keeping batches in memory until it can", dir_,
                          std::strerror(saved));
        disk_failing_ = true;
        return false;
    }
    if (disk_failing_) spdlog::info("spool {}: writable again", dir_);
    disk_failing_ = false;
    if (static_cast<uint64_t>(st.st_size) + entry.size() >= kSegmentBytes) writing_newest_ = false;
    return true;
}

const Batch* Spool::front() {
    while (!front_ && !segments_.empty()) {
        const Read read = read_next();
        if (read == Read::unreadable) return nullptr;  // kept for the next try
        if (read != Read::batch) finish_segment();
    }
    if (!front_ && !memory_.empty()) {
        front_ = std::move(memory_.front());
        memory_.pop_front();
        front_from_disk_ = false;
    }
    return front_ ? &*front_ : nullptr;
}

void Spool::pop() {
    if (!front_) return;
    front_.reset();
    if (front_from_disk_) read_offset_ = next_offset_;
}

Spool::Read Spool::read_next() {
    const std::string path = fmt::format("{}/{:020}.spool", dir_, segments_.front());
    File file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (file.get() < 0 || ::fstat(file.get(), &st) != 0) {
        spdlog::error("spool {}: cannot read: {}", path, std::strerror(errno));
        return Read::unreadable;
    }
    if (static_cast<uint64_t>(st.st_size) <= read_offset_) return Read::end;
    EntryHeader header{};
    std::string payload;
    bool whole = read_all(file.get(), read_offset_, reinterpret_cast<char*>(&header), sizeof header) &&
                 header.magic == kEntryMagic && header.length <= kMaxEntryBytes;
    if (whole) {
        payload.resize(header.length);
        whole = read_all(file.get(), read_offset_ + sizeof header, payload.data(), payload.size()) &&
                fnv1a(payload) == header.checksum;
    }
    front_ = whole ? decode_batch(payload) : std::nullopt;
    if (!front_) {
        spdlog::error("spool {}: damaged entry at byte {}: the last {} byte(s) of the file are skipped", path,
                      read_offset_, static_cast<uint64_t>(st.st_size) - read_offset_);
        return Read::damaged;
    }
    front_from_disk_ = true;
    next_offset_ = read_offset_ + sizeof header + header.length;
    return Read::batch;
}

void Spool::finish_segment() {
    const std::string path = fmt::format("{}/{:020}.spool", dir_, segments_.front());
    ::unlink(path.c_str());
    segments_.erase(segments_.begin());
    if (segments_.empty()) writing_newest_ = false;
    read_offset_ = 0;
}

}  // namespace smp
