// What the collector hands to its stores once a second, or sooner when it
// holds 8,192 rows: the requests that ended, and the logical downloads that
// changed (open) or ended (finished).
// A batch owns everything its C view (smp_batch) points at, and has a byte
// encoding for the spool.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "client_class.hpp"
#include "download_tracker.hpp"
#include "geoip.hpp"
#include "not_forked.hpp"
#include "record_codec.hpp"
#include "smp_module.h"

namespace smp {

// One logical download described in full: what a spool frame holds, and
// what tests build. The collector adds downloads to its batch straight from
// the tracker (Batch::add), without this copy.
struct DownloadRow {
    uint64_t id = 0;
    std::string node;
    std::string client_ip;
    std::string user_agent;
    std::string path;
    std::string etag;
    uint64_t file_size = 0;
    uint64_t distinct_bytes = 0;
    uint64_t bytes_sent = 0;
    bool completed = false;
    bool finished = false;
    uint32_t requests = 0;
    uint32_t resumes = 0;
    int64_t first_us = 0;
    int64_t last_us = 0;
    int64_t active_us = 0;
    smp_end_reason reason = SMP_END_COMPLETED;
    ClientClass client_class = ClientClass::unknown;  // of its user agent
    std::vector<smp_interval> delivered;
    std::vector<smp_interval> active;  // time spans, microseconds (smp_download.active)
    GeoInfo geo;
};

// Bytes that stay where they are for as long as their holder lives, in
// blocks of 64 KiB: the texts and intervals a batch's downloads point at.
// A second's downloads cost a few allocations, not several each.
class Arena {
   public:
    Arena() = default;
    // A moved-from arena is empty: its bump pointer leaves with the blocks.
    Arena(Arena&& other) noexcept
        : blocks_(std::move(other.blocks_)),
          next_(std::exchange(other.next_, nullptr)),
          left_(std::exchange(other.left_, 0)) {}
    Arena& operator=(Arena&& other) noexcept {
        blocks_ = std::move(other.blocks_);
        next_ = std::exchange(other.next_, nullptr);
        left_ = std::exchange(other.left_, 0);
        return *this;
    }
    // A NUL-terminated copy of `text`.
    const char* text(std::string_view text);
    // A copy of `intervals`; nullptr for none.
    const smp_interval* intervals(std::span<const smp_interval> intervals);

   private:
    static constexpr size_t kBlockBytes = 64 * 1024;
    // `size` bytes, aligned for an smp_interval.
    char* allocate(size_t size);
    std::vector<std::unique_ptr<char[]>> blocks_;
    char* next_ = nullptr;
    size_t left_ = 0;
};

// A batch goes to the stores at each tick, and sooner once it holds this
// many requests and downloads. A busy second's batch, handed over whole, was
// tens of MiB that the collector's loop wrote into fresh pages (a fault each
// 4 KiB) and the storage thread read back from memory; a batch of this size
// is 2 to 3 MiB, and malloc hands its room to the next one.
inline constexpr size_t kBatchRows = 8192;
// Batches handed over that the stores may not have yet before the collector
// reads its logs no further: about 130,000 rows, two seconds of a busy server.
inline constexpr uint64_t kBatchesAhead = 16;

struct Batch {
    uint64_t origin = 0;
    uint64_t sequence = 0;
    // The requests that ended, as the stores receive them: each points into
    // a worker's log (whose space is not reused before the stores have the
    // batch) or into bytes the batch keeps.
    std::vector<smp_record> records;
    // The downloads that changed or ended, as the stores receive them: what
    // they point at is in `held`.
    std::vector<smp_download> downloads;
    std::vector<std::unique_ptr<char[]>> kept;
    Arena held;

    bool empty() const { return records.empty() && downloads.empty(); }
    // Adds `record` of `client_class`, keeping its bytes when it owns them.
    void add(DecodedRecord&& record, ClientClass client_class);
    // Adds `download`, open or `finished`, found at `geo`.
    void add(const LogicalDownload& download, const GeoInfo& geo, bool finished, ClientClass client_class);
    void add(const DownloadRow& download);
    // A batch that owns all it points at: it outlives the logs' space.
    Batch copy() const;
};

// The C view of a batch, or of consecutive batches of one origin stored in one
// call (named by the last: a store that has it has them all). One batch is
// viewed where it is; several are copied into room the view keeps from one
// call to the next, so that a store that fell behind and takes 32 batches at
// once does not write tens of MiB into fresh pages each time (a fault every
// 4 KiB) before it stores a row; nor, once the collector has forked a
// checkpoint's writer, into pages shared with it. A view is valid while its
// batches live, and until the next call.
class BatchView {
   public:
    const smp_batch* of(std::span<const Batch* const> batches);
    const smp_batch* of(const Batch& batch) { return of(std::span<const Batch* const>(std::array{&batch})); }

   private:
    // Of several batches: tens of MiB that only the storage thread writes,
    // kept out of the copies the collector forks for its checkpoints.
    std::vector<smp_record, NotForkedAllocator<smp_record>> records_;
    std::vector<smp_download, NotForkedAllocator<smp_download>> downloads_;
    smp_batch batch_{};
};

// The spool's encoding of a batch; decode is empty when `data` is not one.
std::string encode_batch(const Batch& batch);
std::optional<Batch> decode_batch(std::string_view data);

}  // namespace smp
