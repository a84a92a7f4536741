#include "collector_checkpoint.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "byte_codec.hpp"

namespace smp {
namespace {

constexpr uint32_t kCheckpointMagic = 0x534d4b31;  // "SMK1": bump when the layout changes
constexpr std::string_view kJournalPrefix = "journal-";

struct CheckpointHeader {
    uint32_t magic;
    uint32_t log_count;
    uint64_t generation;
    int64_t clock_us;
    uint64_t downloads_bytes;
    uint64_t running_count;
};

struct StoredPlace {
    uint64_t number;
    uint64_t position;
    uint64_t index;
    uint64_t done;
};

struct StoredRunning {
    uint64_t heard_ms;
    uint32_t length;
    uint32_t kind;
};

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

}  // namespace

std::string encode_checkpoint(const Checkpoint& checkpoint) {
    std::string out;
    append_value(
        out, CheckpointHeader{kCheckpointMagic, static_cast<uint32_t>(checkpoint.logs.size()), checkpoint.generation,
                              checkpoint.clock_us, checkpoint.downloads.size(), checkpoint.running.size()});
    for (const auto& place : checkpoint.logs)
        append_value(out, StoredPlace{place.number, place.position, place.index, place.done ? 1u : 0u});
    out += checkpoint.downloads;
    std::string encoded;
    for (const auto& running : checkpoint.running) {
        encoded.clear();
        append_record(running.last.record(), running.last.kind, running.last.pid, encoded, running.last.geo());
        const std::string_view encoding = std::string_view(encoded).substr(sizeof(uint32_t));
        append_value(out, StoredRunning{running.heard_ms, static_cast<uint32_t>(encoding.size()),
                                        static_cast<uint32_t>(running.last.kind)});
        out += encoding;
    }
    append_value(out, fnv1a(out));
    return out;
}

std::optional<Checkpoint> decode_checkpoint(std::string_view data) {
    uint64_t sum = 0;
    if (data.size() < sizeof sum) return std::nullopt;
    std::memcpy(&sum, data.data() + data.size() - sizeof sum, sizeof sum);
    data.remove_suffix(sizeof sum);
    if (fnv1a(data) != sum) return std::nullopt;
    CheckpointHeader header{};
    if (!take_value(data, header) || header.magic != kCheckpointMagic) return std::nullopt;
    Checkpoint checkpoint;
    checkpoint.generation = header.generation;
    checkpoint.clock_us = header.clock_us;
    for (uint32_t i = 0; i < header.log_count; ++i) {
        StoredPlace place{};
        if (!take_value(data, place)) return std::nullopt;
        checkpoint.logs.push_back({place.number, place.position, place.index, place.done != 0});
    }
    if (data.size() < header.downloads_bytes) return std::nullopt;
    checkpoint.downloads.assign(data.data(), header.downloads_bytes);
    data.remove_prefix(header.downloads_bytes);
    for (uint64_t i = 0; i < header.running_count; ++i) {
        StoredRunning stored{};
        if (!take_value(data, stored) || data.size() < stored.length) return std::nullopt;
        auto last = DecodedRecord::decode(data.substr(0, stored.length));
        if (!last) return std::nullopt;
        // The encoding carries the record's place in its log.
        checkpoint.running.push_back({std::move(*last), stored.heard_ms});
        data.remove_prefix(stored.length);
    }
    if (!data.empty()) return std::nullopt;
    return checkpoint;
}

std::string journal_path(const std::string& dir, uint64_t generation) {
    return fmt::format("{}/{}{:020}", dir, kJournalPrefix, generation);
}

std::string checkpoint_path(const std::string& dir) { return dir + "/checkpoint"; }

std::string new_checkpoint_path(const std::string& dir, uint64_t generation) {
    return fmt::format("{}/checkpoint.new-{}", dir, generation);
}

void remove_new_checkpoints(const std::string& dir) {
    DIR* listing = opendir(dir.c_str());
    if (listing == nullptr) return;
    std::vector<std::string> names;
    while (const dirent* entry = readdir(listing))
        if (std::string_view(entry->d_name).starts_with("checkpoint.new-")) names.emplace_back(entry->d_name);
    closedir(listing);
    for (const auto& name : names) unlink((dir + "/" + name).c_str());
}

std::vector<uint64_t> list_journals(const std::string& dir) {
    std::vector<uint64_t> generations;
    DIR* listing = opendir(dir.c_str());
    if (listing == nullptr) return generations;
    while (const dirent* entry = readdir(listing)) {
        std::string_view name = entry->d_name;
        if (!name.starts_with(kJournalPrefix)) continue;
        name.remove_prefix(kJournalPrefix.size());
        uint64_t generation = 0;
        if (std::from_chars(name.data(), name.data() + name.size(), generation).ptr == name.data() + name.size())
            generations.push_back(generation);
    }
    closedir(listing);
    std::sort(generations.begin(), generations.end());
    return generations;
}

std::vector<JournalEntry> read_journal(const std::string& path) {
    std::vector<JournalEntry> entries;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return entries;
    JournalEntry entry;
    while (::read(fd, &entry, sizeof entry) == static_cast<ssize_t>(sizeof entry)) entries.push_back(entry);
    ::close(fd);
    return entries;
}

Journal::~Journal() {
    if (fd_ >= 0) ::close(fd_);
}

bool Journal::start(const std::string& dir, uint64_t generation, std::string& error) {
    flush();
    const std::string path = journal_path(dir, generation);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        error = "cannot create " + path + ": " + std::strerror(errno);
        return false;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
    generation_ = generation;
    return true;
}

bool Journal::flush() {
    if (pending_.empty() || fd_ < 0) return true;
    // Whole entries only: a short write leaves a torn last entry, which the
    // reader leaves out, and the rest is given up rather than misaligned.
    const bool written = write_all(
        fd_, std::string_view(reinterpret_cast<const char*>(pending_.data()), pending_.size() * sizeof(JournalEntry)));
    pending_.clear();
    return written;
}

bool read_whole_file(const std::string& path, std::string& data) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    data.clear();
    char buffer[1 << 16];
    ssize_t n = 0;
    while ((n = ::read(fd, buffer, sizeof buffer)) > 0) data.append(buffer, static_cast<size_t>(n));
    ::close(fd);
    return n == 0;
}

void sync_directory(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    fsync(fd);
    ::close(fd);
}

bool write_file_synced(const std::string& path, std::string_view data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return false;
    const bool written = write_all(fd, data) && fdatasync(fd) == 0;
    ::close(fd);
    return written;
}

}  // namespace smp
