#include "record_log.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

namespace smp {
namespace {

// Log numbers start here, so that the download ids made from them (see
// collector.cpp) stay above the ids of the versions before, which were
// microseconds since 1970 (below 2^52 until 2112).
constexpr uint64_t kFirstLogNumber = 4096;
constexpr const char* kLastNumberFile = "last-number";
constexpr const char* kLogSuffix = ".log";

constexpr uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

std::string errno_text() { return std::strerror(errno); }

}  // namespace

std::string record_log_path(const std::string& dir, uint64_t number) {
    return fmt::format("{}/{:020}{}", dir, number, kLogSuffix);
}

std::string record_log_dir(const std::string& state_dir, int shard) {
    return shard == 0 ? state_dir + "/records" : fmt::format("{}/records/shard-{}", state_dir, shard);
}

std::vector<std::string> record_log_dirs(const std::string& state_dir) {
    std::vector<std::string> dirs;
    for (int shard = 0;; ++shard) {
        const std::string dir = record_log_dir(state_dir, shard);
        struct stat status {};
        if (shard > 0 && stat(dir.c_str(), &status) != 0) break;
        dirs.push_back(dir);
    }
    return dirs;
}

std::vector<uint64_t> list_record_logs(const std::string& dir) {
    std::vector<uint64_t> numbers;
    DIR* listing = opendir(dir.c_str());
    if (listing == nullptr) return numbers;
    while (const dirent* entry = readdir(listing)) {
        const std::string_view name = entry->d_name;
        if (name.size() != 20 + std::strlen(kLogSuffix) || !name.ends_with(kLogSuffix)) continue;
        uint64_t number = 0;
        if (std::from_chars(name.data(), name.data() + 20, number).ptr == name.data() + 20) numbers.push_back(number);
    }
    closedir(listing);
    std::sort(numbers.begin(), numbers.end());
    return numbers;
}

namespace {
constexpr const char* kDroppedFile = "dropped";

uint64_t read_number(const std::string& path) {
    unsigned long long value = 0;
    if (FILE* file = std::fopen(path.c_str(), "re")) {
        if (std::fscanf(file, "%llu", &value) != 1) value = 0;
        std::fclose(file);
    }
    return value;
}
}  // namespace

uint64_t dropped_records(const std::string& dir) {
    uint64_t dropped = read_number(dir + "/" + kDroppedFile);
    for (uint64_t number : list_record_logs(dir)) {
        std::string error;
        if (auto log = MappedLog::open(record_log_path(dir, number), error))
            dropped += log->header().dropped.load(std::memory_order_relaxed);
    }
    return dropped;
}

void add_dropped_records(const std::string& dir, uint64_t count) {
    if (count == 0) return;
    const std::string path = dir + "/" + kDroppedFile;
    const std::string temporary = path + ".new";
    if (FILE* file = std::fopen(temporary.c_str(), "we")) {
        std::fprintf(file, "%llu\n", static_cast<unsigned long long>(read_number(path) + count));
        const bool written = std::fclose(file) == 0;
        if (written) std::rename(temporary.c_str(), path.c_str());
    }
}

// ---- MappedLog ----------------------------------------------------------------

MappedLog::~MappedLog() {
    if (base_ != nullptr) munmap(base_, size_);
}

MappedLog::MappedLog(MappedLog&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedLog& MappedLog::operator=(MappedLog&& other) noexcept {
    if (this != &other) {
        if (base_ != nullptr) munmap(base_, size_);
        base_ = std::exchange(other.base_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

std::optional<MappedLog> MappedLog::map(int fd, std::string& error) {
    struct stat status {};
    if (fstat(fd, &status) != 0) {
        error = errno_text();
        return std::nullopt;
    }
    const auto size = static_cast<size_t>(status.st_size);
    if (size < kRecordLogHeaderBytes + kMinRecordLogBytes) {
        error = "too short to be a record log";
        return std::nullopt;
    }
    void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        error = errno_text();
        return std::nullopt;
    }
    MappedLog log;
    log.base_ = base;
    log.size_ = size;
    const RecordLogHeader& header = log.header();
    if (header.magic != RecordLogHeader::kMagic || header.header_bytes != kRecordLogHeaderBytes ||
        header.capacity != size - kRecordLogHeaderBytes || header.capacity % 8 != 0) {
        error = "not a record log of this version";
        return std::nullopt;
    }
    return log;
}

std::optional<MappedLog> MappedLog::open(const std::string& path, std::string& error) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        error = errno_text();
        return std::nullopt;
    }
    auto log = map(fd, error);
    ::close(fd);
    return log;
}

// ---- RecordLogDirectory ---------------------------------------------------------

uint64_t RecordLogDirectory::next_number() {
    // Numbers are never used twice, even after every log was read and
    // deleted: a download's id is made from one. The last one given is kept
    // in a file, written before the log it names exists.
    const std::string counter = counter_dir_ + "/" + kLastNumberFile;
    if (last_number_ == 0) {
        last_number_ = kFirstLogNumber - 1;
        if (FILE* file = std::fopen(counter.c_str(), "re")) {
            unsigned long long stored = 0;
            if (std::fscanf(file, "%llu", &stored) == 1) last_number_ = std::max<uint64_t>(last_number_, stored);
            std::fclose(file);
        }
        for (const auto& dir : {dir_, counter_dir_}) {
            const auto logs = list_record_logs(dir);
            if (!logs.empty()) last_number_ = std::max(last_number_, logs.back());
        }
    }
    const uint64_t number = last_number_ + 1;
    const std::string temporary = counter + ".new";
    if (FILE* file = std::fopen(temporary.c_str(), "we")) {
        std::fprintf(file, "%llu\n", static_cast<unsigned long long>(number));
        const bool written = std::fflush(file) == 0 && fdatasync(fileno(file)) == 0;
        std::fclose(file);
        if (!written || std::rename(temporary.c_str(), counter.c_str()) != 0) return 0;
    } else {
        return 0;
    }
    last_number_ = number;
    return number;
}

std::optional<RecordLogDirectory::Created> RecordLogDirectory::create(uint64_t capacity, uid_t uid, gid_t gid,
                                                                      std::string& error) {
    std::error_code made;
    std::filesystem::create_directories(dir_, made);
    if (!made) std::filesystem::create_directories(counter_dir_, made);
    if (made) {
        error = "cannot create " + dir_ + ": " + made.message();
        return std::nullopt;
    }
    if (uid != static_cast<uid_t>(-1)) chown(dir_.c_str(), uid, gid);
    const uint64_t number = next_number();
    if (number == 0) {
        error = "cannot write " + counter_dir_ + "/" + kLastNumberFile + ": " + errno_text();
        return std::nullopt;
    }
    // Made under another name and renamed once whole: the collector, which
    // looks for new logs, never sees one without its header.
    const std::string path = record_log_path(dir_, number);
    const std::string making = path + ".new";
    const int fd = ::open(making.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        error = "cannot create " + path + ": " + errno_text();
        return std::nullopt;
    }
    Created created;
    created.fd = fd;
    created.number = number;
    // The ring's pages are allocated now: a full volume is found here, where
    // the log can be made smaller, and never as a SIGBUS in the worker.
    uint64_t size = std::max(align8(capacity), kMinRecordLogBytes);
    int result = 0;
    while ((result = posix_fallocate(fd, 0, static_cast<off_t>(kRecordLogHeaderBytes + size))) == ENOSPC &&
           size / 2 >= kMinRecordLogBytes)
        size = align8(size / 2);
    if (result != 0) {
        error = fmt::format("cannot allocate {} bytes for {}: {}", kRecordLogHeaderBytes + size, path,
                            std::strerror(result));
        ::close(fd);
        unlink(making.c_str());
        return std::nullopt;
    }
    if (size < capacity)
        created.warning = fmt::format("the volume of {} has room for a tracking log of {} bytes, not the {} asked for",
                                      dir_, size, capacity);
    if (uid != static_cast<uid_t>(-1)) fchown(fd, uid, gid);
    RecordLogHeader header;
    header.magic = RecordLogHeader::kMagic;
    header.header_bytes = kRecordLogHeaderBytes;
    header.number = number;
    header.capacity = size;
    if (pwrite(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header) ||
        rename(making.c_str(), path.c_str()) != 0) {
        error = "cannot write " + path + ": " + errno_text();
        ::close(fd);
        unlink(making.c_str());
        return std::nullopt;
    }
    created.capacity = size;
    return created;
}

void RecordLogDirectory::end(int fd) {
    std::string error;
    if (auto log = MappedLog::map(fd, error)) log->header().ended.store(1, std::memory_order_release);
    ::close(fd);
}

size_t RecordLogDirectory::end_all_left() {
    size_t ended = 0;
    for (uint64_t number : list_record_logs(dir_)) {
        std::string error;
        auto log = MappedLog::open(record_log_path(dir_, number), error);
        if (!log) continue;  // the collector says so when it reads the directory
        if (log->header().ended.exchange(1, std::memory_order_acq_rel) == 0) ++ended;
    }
    return ended;
}

// ---- RecordLogWriter ----------------------------------------------------------

bool RecordLogWriter::append(const smp_record& record, RecordKind kind, uint32_t pid, const char* geo) {
    RecordLogHeader& header = log_.header();
    encoded_.clear();
    append_record(record, kind, pid, encoded_, geo);
    // append_record frames the encoding with its length; the ring's frame says it.
    const std::string_view encoding = std::string_view(encoded_).substr(sizeof(uint32_t));
    const uint64_t capacity = header.capacity;
    const uint64_t need = align8(sizeof(RecordFrame) + encoding.size());
    uint64_t position = header.written.load(std::memory_order_relaxed);  // this process is the one writer
    const uint64_t offset = position % capacity;
    const uint64_t tail = capacity - offset;
    const uint64_t padding = tail < need ? tail : 0;
    if (position + padding + need - header.released.load(std::memory_order_acquire) > capacity) {
        header.dropped.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    char* ring = log_.ring();
    if (padding >= sizeof(RecordFrame)) {
        const RecordFrame pad{0, 0, 0};
        std::memcpy(ring + offset, &pad, sizeof pad);
    }
    position += padding;
    char* at = ring + position % capacity;
    const RecordFrame frame{static_cast<uint32_t>(encoding.size()), static_cast<uint32_t>(kind),
                            header.records.load(std::memory_order_relaxed) + 1};
    std::memcpy(at, &frame, sizeof frame);
    std::memcpy(at + sizeof frame, encoding.data(), encoding.size());
    header.records.store(frame.index, std::memory_order_relaxed);
    header.written.store(position + need, std::memory_order_release);
    return true;
}

// ---- RecordLogReader ----------------------------------------------------------

std::optional<RecordLogReader::Frame> RecordLogReader::next() {
    const RecordLogHeader& header = log_.header();
    const uint64_t capacity = header.capacity;
    for (;;) {
        if (damaged_) return std::nullopt;
        if (position_ >= written_) {
            written_ = header.written.load(std::memory_order_acquire);
            if (position_ >= written_) return std::nullopt;
        }
        const uint64_t offset = position_ % capacity;
        const uint64_t tail = capacity - offset;
        RecordFrame frame;
        if (tail >= sizeof frame) std::memcpy(&frame, log_.ring() + offset, sizeof frame);
        if (tail < sizeof frame || frame.kind == 0) {  // padding: the frame is at the ring's start
            // The writer pads only when it wrote the next frame at the start.
            if (position_ + tail >= written_) {
                damaged_ = true;
                return std::nullopt;
            }
            position_ += tail;
            continue;
        }
        const uint64_t size = align8(sizeof frame + frame.length);
        if (size > tail || position_ + size > written_ || (index_ != kUnknownIndex && frame.index != index_ + 1) ||
            (frame.kind != static_cast<uint32_t>(RecordKind::transfer) &&
             frame.kind != static_cast<uint32_t>(RecordKind::close))) {
            damaged_ = true;
            return std::nullopt;
        }
        position_ += size;
        index_ = frame.index;
        return Frame{static_cast<RecordKind>(frame.kind), frame.index,
                     std::string_view(log_.ring() + offset + sizeof frame, frame.length)};
    }
}

bool RecordLogReader::finished() const {
    if (!ended()) return false;
    return damaged_ || position_ == log_.header().written.load(std::memory_order_acquire);
}

}  // namespace smp
