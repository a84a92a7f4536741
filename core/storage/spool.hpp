// The spool: batches a store could not take, kept on disk in order until it
// can, across restarts of the collector and of the server.
//
// A directory per store holds segment files named by a counter
// (00000000000000000001.spool, ...). Batches are appended to the newest
// segment and read from the oldest; a segment read to its end is deleted.
// Each entry is framed by a magic, its length and a checksum, so a torn
// last write (a crash mid-append) is recognised and skipped, never replayed
// as garbage. When the disk cannot take a batch (full, read-only), it waits
// in memory behind the ones on disk, and is written when the disk can.
//
// Used by one thread: the store's storage thread.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "batch.hpp"

namespace smp {

class Spool {
   public:
    // Finds the segments left in `dir` by an earlier run; the directory is
    // created when the first batch is written.
    explicit Spool(std::string dir);
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    bool empty() const { return segments_.empty() && memory_.empty(); }
    const std::string& dir() const { return dir_; }
    uint64_t bytes_on_disk() const;  // in the segments not yet read to the end
    size_t batches_in_memory() const { return memory_.size(); }

    // Appends `batch` behind every batch already spooled.
    void push(const Batch& batch);
    // The oldest spooled batch, or nullptr when empty. Stays valid until pop().
    const Batch* front();
    // Forgets the batch front() returned.
    void pop();

   private:
    bool write(const Batch& batch);  // to the newest segment; false when the disk refused
    enum class Read { batch, end, damaged, unreadable };
    Read read_next();  // the entry at read_offset_ into front_
    void finish_segment();

    std::string dir_;
    std::vector<uint64_t> segments_;  // counters of the files on disk, oldest first
    uint64_t next_segment_ = 1;
    bool writing_newest_ = false;  // this run appended to segments_.back()
    uint64_t read_offset_ = 0;     // in segments_.front()
    uint64_t next_offset_ = 0;     // after the entry front() returned
    std::optional<Batch> front_;
    bool front_from_disk_ = false;
    std::deque<Batch> memory_;   // behind the disk: the disk refused them
    bool disk_failing_ = false;  // logged once per failure
};

}  // namespace smp
