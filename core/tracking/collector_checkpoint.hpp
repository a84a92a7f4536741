// What lets a new stats collector continue exactly where the last one was,
// after a crash, a restart at reload, or a restart of the whole server:
//
// - the checkpoint (`state_dir/records/checkpoint`): the collector's state
//   at one instant (where it was in every worker's log, its open downloads,
//   its running requests), written every few seconds (by a thread from what
//   the collector encoded, or, for a large state, by a forked copy of the
//   collector), and committed (renamed into place) only once the stores have
//   every batch handed over before that instant. Only then may the workers
//   reuse the logs' space before those positions.
// - the journal (`journal-<generation>`): what the collector did since, in
//   order: read log L up to record I, found log L ended, ticked at time T.
//   Replayed over the checkpoint, it gives the same downloads with the same
//   ids, in the same order, as before the crash: the stores receive the
//   same rows again and keep one of each (requests by log position,
//   downloads by id).
//
// The checkpoint is written with a checksum and renamed into place; a torn
// or foreign one is refused, and the collector then starts from the logs'
// released positions with no open downloads (and says so).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "record_codec.hpp"

namespace smp {

struct LogPlace {
    uint64_t number = 0;
    uint64_t position = 0;  // bytes read
    uint64_t index = 0;     // the last record read
    bool done = false;      // ended, read to its end, its running requests closed
};

struct RunningRequest {
    DecodedRecord last;  // its last progress record, owned
    uint64_t heard_ms = 0;
};

struct Checkpoint {
    uint64_t generation = 0;  // the journal that follows it
    int64_t clock_us = 0;     // the collector's time at the last tick
    std::vector<LogPlace> logs;
    std::string downloads;  // DownloadTracker::save
    std::vector<RunningRequest> running;
};

std::string encode_checkpoint(const Checkpoint& checkpoint);
std::optional<Checkpoint> decode_checkpoint(std::string_view data);

// One step of the collector, as journaled.
struct JournalEntry {
    enum Kind : uint32_t { read = 1, ended = 2, tick = 3 };
    uint32_t kind = 0;
    uint32_t reserved = 0;
    uint64_t a = 0;  // read, ended: the log's number; tick: the time (µs)
    uint64_t b = 0;  // read: the last record read
};
static_assert(sizeof(JournalEntry) == 24);

std::string journal_path(const std::string& dir, uint64_t generation);
std::string checkpoint_path(const std::string& dir);
// Where the checkpoint of `generation` is written before it is committed.
std::string new_checkpoint_path(const std::string& dir, uint64_t generation);
void remove_new_checkpoints(const std::string& dir);
// The generations of the journals in `dir`, in order.
std::vector<uint64_t> list_journals(const std::string& dir);
// The whole entries of a journal (a torn last one is left out).
std::vector<JournalEntry> read_journal(const std::string& path);

// Appends entries to the current journal; entries wait in memory until
// flush(), one write a poll of the logs.
class Journal {
   public:
    Journal() = default;
    ~Journal();
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;

    // Starts `generation`'s file (closing the current one); false with
    // `error` set when it cannot be created.
    bool start(const std::string& dir, uint64_t generation, std::string& error);
    void add(const JournalEntry& entry) { pending_.push_back(entry); }
    // False when the disk refused: a crash from here on may replay
    // differently (said once by the caller).
    bool flush();
    uint64_t generation() const { return generation_; }

   private:
    int fd_ = -1;
    uint64_t generation_ = 0;
    std::vector<JournalEntry> pending_;
};

// Writes `data` to `path` (replacing it) and waits until it is on disk.
bool write_file_synced(const std::string& path, std::string_view data);
// False when `path` cannot be read (missing included).
bool read_whole_file(const std::string& path, std::string& data);
// Waits until the directory's entries (a rename) are on disk.
void sync_directory(const std::string& dir);

}  // namespace smp
