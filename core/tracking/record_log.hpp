// A worker's record log: how a record travels from a worker to the stats
// collector without ever being dropped or waited on.
//
// Each worker appends every record to its own log, a file under
// `state_dir/records/` mapped into memory by the worker (the one writer)
// and by the collector (the one reader). The file is a header page and a
// ring of `tracking.log_size` bytes, allocated on disk when the master
// creates it, so an append is a copy into memory: no system call, no lock,
// no page the disk could refuse later (a write to an unallocated page of a
// shared mapping is a SIGBUS, not an error code).
//
// Positions are bytes since the log began, never wrapped: `written` is the
// end of the last whole frame (published after the frame's bytes), and
// `released` is the collector's checkpoint: every frame before it reached
// the stores (or their spools) and the collector's saved state, so the
// worker may overwrite it. A record that does not fit between the two is
// dropped and counted, the one place a record can be lost.
//
// The pages live in the kernel's page cache, so a log outlives its writer
// and its reader: a worker or collector killed with -9, or the whole
// server, loses nothing that was appended. (A power cut can lose what the
// kernel had not written back yet, as with any unsynced file.) The master
// marks a log `ended` when it has reaped its worker, and at start marks
// every log an earlier run left; the collector deletes a log once ended
// and released to its end.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "record_codec.hpp"

namespace smp {

// The first page of a log file.
struct RecordLogHeader {
    static constexpr uint32_t kMagic = 0x534d4c31;  // "SML1": bump when the layout changes
    uint32_t magic = 0;
    uint32_t header_bytes = 0;
    uint64_t number = 0;    // the log's number: part of every download id it opens
    uint64_t capacity = 0;  // bytes of the ring after the header
    std::atomic<uint64_t> written{0};
    std::atomic<uint64_t> released{0};
    std::atomic<uint64_t> records{0};  // frames written: the index of the last one
    std::atomic<uint64_t> dropped{0};  // records that found the ring full
    std::atomic<uint32_t> ended{0};    // no more records will come
    uint32_t writer_pid = 0;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// A frame in the ring: this, then the record's encoding, padded to 8 bytes.
// Kind 0 is padding: the ring's tail was too short for the next frame, which
// starts again at the ring's beginning.
struct RecordFrame {
    uint32_t length = 0;  // of the encoding
    uint32_t kind = 0;    // RecordKind, or 0 for padding
    uint64_t index = 0;   // 1, 2, ... in the log
};

constexpr size_t kRecordLogHeaderBytes = 4096;
constexpr uint64_t kMinRecordLogBytes = 1 << 20;

// "state_dir/records/00000000000000004096.log" for log 4096.
std::string record_log_path(const std::string& dir, uint64_t number);
// The numbers of the logs in `dir`, in order.
std::vector<uint64_t> list_record_logs(const std::string& dir);
// Records the workers dropped because their log was full: those counted in
// the logs in `dir`, and in the logs read and deleted before (kept in a file
// there, to which the collector adds a log's count when it deletes it).
uint64_t dropped_records(const std::string& dir);
void add_dropped_records(const std::string& dir, uint64_t count);

// A log file mapped into memory; unmapped when destroyed.
class MappedLog {
   public:
    MappedLog() = default;
    ~MappedLog();
    MappedLog(MappedLog&& other) noexcept;
    MappedLog& operator=(MappedLog&& other) noexcept;
    MappedLog(const MappedLog&) = delete;
    MappedLog& operator=(const MappedLog&) = delete;

    // Maps the log open on `fd` (the descriptor is not kept); empty with
    // `error` set when it is not one.
    static std::optional<MappedLog> map(int fd, std::string& error);
    static std::optional<MappedLog> open(const std::string& path, std::string& error);

    RecordLogHeader& header() const { return *static_cast<RecordLogHeader*>(base_); }
    char* ring() const { return static_cast<char*>(base_) + kRecordLogHeaderBytes; }
    bool valid() const { return base_ != nullptr; }

   private:
    void* base_ = nullptr;
    size_t size_ = 0;
};

// Where collector `shard` (0-based, of tracking.collectors) reads its logs:
// state_dir/records, and state_dir/records/shard-<k> for the others.
std::string record_log_dir(const std::string& state_dir, int shard);
// The directories of every shard that has one, the first one first.
std::vector<std::string> record_log_dirs(const std::string& state_dir);

// The master's side: numbering, creating and ending logs.
class RecordLogDirectory {
   public:
    // Logs go to `dir`; their numbers come from a counter in `counter_dir`
    // (the first shard's: numbers are unique across shards).
    explicit RecordLogDirectory(std::string dir, std::string counter_dir = {})
        : dir_(std::move(dir)), counter_dir_(counter_dir.empty() ? dir_ : std::move(counter_dir)) {}
    const std::string& dir() const { return dir_; }

    struct Created {
        int fd = -1;  // open read-write, for the worker to map
        uint64_t number = 0;
        uint64_t capacity = 0;
        std::string warning;  // the volume had less room than asked for
    };
    // A new log of `capacity` bytes (less when the volume cannot hold it, down
    // to kMinRecordLogBytes), owned by `uid`/`gid` (-1: unchanged). Empty
    // with `error` set when none can be made.
    std::optional<Created> create(uint64_t capacity, uid_t uid, gid_t gid, std::string& error);
    // Marks log `fd` ended (its writer is gone) and closes `fd`.
    static void end(int fd);
    // Marks every log in the directory ended: at the master's start, their
    // writers are gone. Returns how many were not ended yet.
    size_t end_all_left();

   private:
    uint64_t next_number();

    std::string dir_;
    std::string counter_dir_;
    uint64_t last_number_ = 0;  // 0: not read from disk yet
};

// The worker's side. Never blocks, never waits: an append that does not
// fit is dropped and counted.
class RecordLogWriter {
   public:
    explicit RecordLogWriter(MappedLog log) : log_(std::move(log)) {}
    // False when the ring was full: the record is dropped (and counted in
    // the header, for the stats). `geo`: see append_record.
    bool append(const smp_record& record, RecordKind kind, uint32_t pid, const char* geo = nullptr);
    uint64_t number() const { return log_.header().number; }
    uint64_t dropped() const { return log_.header().dropped.load(std::memory_order_relaxed); }

   private:
    MappedLog log_;
    std::string encoded_;  // reused: no allocation per record once warm
};

// The collector's side: frames from a position on, read in place.
class RecordLogReader {
   public:
    // `index` is that of the frame before `position`; kUnknownIndex when not
    // known (the first frame read is then believed).
    static constexpr uint64_t kUnknownIndex = UINT64_MAX;
    RecordLogReader(MappedLog log, uint64_t position, uint64_t index)
        : log_(std::move(log)), position_(position), index_(index), written_(position) {}

    struct Frame {
        RecordKind kind;
        uint64_t index;
        std::string_view encoding;  // in the ring: valid until released
    };
    // The next whole frame, or empty when none (yet); `damaged` is set when
    // the ring holds something that is not a frame (then nothing more is read).
    std::optional<Frame> next();
    uint64_t number() const { return log_.header().number; }
    uint64_t position() const { return position_; }  // after the last frame read
    uint64_t index() const { return index_; }        // of the last frame read
    bool ended() const { return log_.header().ended.load(std::memory_order_acquire) != 0; }
    // Ended, and every frame read.
    bool finished() const;
    bool damaged() const { return damaged_; }
    uint64_t dropped() const { return log_.header().dropped.load(std::memory_order_relaxed); }
    uint64_t released() const { return log_.header().released.load(std::memory_order_relaxed); }
    // Bytes the writer has appended that are not read yet.
    uint64_t unread() const {
        const uint64_t written = log_.header().written.load(std::memory_order_acquire);
        return written > position_ ? written - position_ : 0;
    }
    // At least a quarter of the ring is read and not released: what a
    // checkpoint would give back. (What is not read yet, it would not.)
    bool releasable_quarter() const {
        const RecordLogHeader& header = log_.header();
        const uint64_t released = header.released.load(std::memory_order_relaxed);
        return position_ > released && position_ - released >= header.capacity / 4;
    }
    // Lets the writer reuse everything before `position`.
    void release(uint64_t position) { log_.header().released.store(position, std::memory_order_release); }

   private:
    MappedLog log_;
    uint64_t position_;
    uint64_t index_;
    uint64_t written_ = 0;  // the writer's position when last looked at
    bool damaged_ = false;
};

}  // namespace smp
