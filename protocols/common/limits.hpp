// Limits shared by every worker of one server: counters in shared memory,
// mapped by the master before fork, so that all workers agree on how many
// downloads of a file one client runs, or how many connections it holds.
//
// A holding records the process that took it. When the master reaps a
// worker, it marks that worker's holdings orphaned (forget_process); the next
// acquire of the key reclaims them, so a crash never keeps a slot, and a
// later process that gets the same pid inherits nothing.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "smp_module.h"

namespace smp::http {

// A mutex in shared memory that a process killed while holding it cannot
// keep: a robust, process-shared pthread mutex. The kernel releases it when
// its holder dies, and the next locker is told (EOWNERDEAD). The tables it
// guards are written so that every instant of a critical section leaves
// them consistent (a new entry's key is written last), so that locker only
// marks the mutex consistent and goes on; what the dead process held is
// taken back when the master reaps it. Lives inside the mapped table.
class SharedMutex {
   public:
    // Once, in the memory that will be shared, before any other process maps it.
    void init();
    void lock();
    void unlock();

   private:
    pthread_mutex_t mutex_;
};

class SharedCounters {
   public:
    // Maps room for `capacity` holdings (a power of two), shared with the
    // processes forked later. Throws std::system_error when mmap fails.
    explicit SharedCounters(uint32_t capacity = 1u << 16);
    ~SharedCounters();
    SharedCounters(const SharedCounters&) = delete;
    SharedCounters& operator=(const SharedCounters&) = delete;

    // Takes one of `limit` slots of `key` for this process; false when all
    // are held (by live processes). A full table admits (and says so in full()).
    bool acquire(uint64_t key, uint32_t limit);
    // Gives back one slot of `key` taken by this process.
    void release(uint64_t key);
    // Master, when it has reaped `pid`: its holdings no longer count, and
    // wait to be reclaimed (for a note of a shared slot, given back to the
    // shared counter first: reclaim and reclaim_dead say how many).
    void forget_process(pid_t pid);
    // Forgets the orphaned holdings of `key`; how many there were.
    uint32_t reclaim(uint64_t key);
    // Forgets every orphaned holding, and says which they were: a worker
    // that replaces a dead one gives back the dead one's slots in the
    // counters that servers share.
    struct Holding {
        uint64_t key;
        uint32_t held;
    };
    std::vector<Holding> reclaim_dead();
    // Live holdings of `key`, for tests.
    uint32_t count(uint64_t key);
    bool full() const;

   private:
    struct Entry {
        uint64_t key;  // 0: empty; kTombstone: was used, probe on
        int32_t pid;   // the holder; kOrphaned once the master reaped it
        uint32_t held;
    };
    struct Table {
        SharedMutex mutex;
        std::atomic<uint32_t> full;  // an acquire found no free entry
        Entry entries[1];            // `capacity` of them
    };
    void vacate(uint32_t at);  // frees entry `at`, under the lock

    Table* table_ = nullptr;
    uint32_t capacity_;
    size_t bytes_;
};

// Bandwidth budgets shared by every worker: one per key (a logical download),
// a generic cell rate: each key has a theoretical arrival time (tat) that
// moves forward by bytes / rate as bytes are granted; a grant is possible
// while tat is less than `burst` ahead of now. The segments of one download
// on several connections (and workers) draw from one budget.
class SharedBuckets {
   public:
    explicit SharedBuckets(uint32_t capacity = 1u << 14);
    ~SharedBuckets();
    SharedBuckets(const SharedBuckets&) = delete;
    SharedBuckets& operator=(const SharedBuckets&) = delete;

    // Up to `want` bytes of `key`'s budget at `rate` bytes/s, now; 0 when
    // none is left, and then `wait_us` says when some will be.
    uint64_t grant(uint64_t key, uint64_t want, uint64_t rate, int64_t now_us, int64_t& wait_us);

   private:
    struct Bucket {
        uint64_t key;
        int64_t tat_ns;
    };
    struct Table {
        SharedMutex mutex;
        Bucket buckets[1];
    };
    Table* table_ = nullptr;
    uint32_t capacity_;
    size_t bytes_;
};

// The table of the limits of the files under `root`, made on first use. A
// reload loads the configuration again while the old workers still run:
// the new instance gets the table the old one made (both alive in the
// master), so that a slot held by an old worker still counts. Master only.
template <class Table>
std::shared_ptr<Table> shared_table(const std::string& root) {
    static std::map<std::string, std::weak_ptr<Table>> tables;
    std::weak_ptr<Table>& entry = tables[root];
    if (auto existing = entry.lock()) return existing;
    auto made = std::make_shared<Table>();
    entry = made;
    return made;
}

// The connections of `paused` (waiting for their rate budget) whose
// resume_ms has come: taken out of the list, their `paused` flag cleared.
template <class Connection>
std::vector<Connection*> take_resumable(std::vector<Connection*>& paused, uint64_t now_ms) {
    std::vector<Connection*> due;
    for (size_t i = 0; i < paused.size();) {
        Connection* c = paused[i];
        if (c->resume_ms > now_ms) {
            ++i;
            continue;
        }
        c->paused = false;
        due.push_back(c);
        paused[i] = paused.back();
        paused.pop_back();
    }
    return due;
}

// The limits every protocol module has (docs/limits.md), off by default. A
// module's Settings derives from this, so that each is read, checked and
// named once.
struct ModuleLimits {
    bool unique_ip = false;               // one download of a path per client at a time
    uint32_t max_connections_per_ip = 0;  // 0: no limit
    uint64_t limit_rate = 0;              // bytes/s of one response after limit_rate_after; 0: none
    uint64_t limit_rate_after = 0;
    std::shared_ptr<SharedCounters> counters;  // when unique_ip or max_connections_per_ip is on

    // Reads the values of the keys unique_ip, max_connections_per_ip,
    // limit_rate and limit_rate_after; false, with the key and the problem,
    // when one is out of range.
    bool read(const smp_config_value& unique_ip_value, const smp_config_value& max_connections_per_ip_value,
              const smp_config_value& limit_rate_value, const smp_config_value& limit_rate_after_value,
              const char*& bad_key, const char*& problem);
    bool counts_connections_or_downloads() const { return unique_ip || max_connections_per_ip > 0; }
};

// limit_rate as nginx paces it: `after` bytes at once, then `rate` bytes a
// second counted from `start_ms`. Of a response that has sent `sent` bytes,
// what may go at `now_ms`; when nothing may, how long until a tenth of a
// second's worth may (so that a paced response moves in a few large writes,
// not many small ones).
struct RateAllowance {
    uint64_t bytes = 0;
    uint64_t wait_ms = 0;
};
RateAllowance rate_allowance(uint64_t rate, uint64_t after, uint64_t start_ms, uint64_t sent, uint64_t now_ms);

// The key of a limit: FNV-1a of its kind and its parts, without its top bit,
// which marks the note of a slot held in the shared counters (kSharedSlotBit).
uint64_t limit_key(std::string_view kind, std::string_view a, std::string_view b = {});
constexpr uint64_t kSharedSlotBit = 1ull << 63;

// A slot of a limit that an exchange or a connection holds, or is asking
// the plugins' shared counters for.
struct Slot {
    uint64_t key = 0;           // 0: none
    bool shared = false;        // held in the plugins' shared counters, not this server's
    smp_async* call = nullptr;  // the shared counter has not answered yet
    uint32_t limit = 0;         // this server's own limit, if the shared counter cannot answer

    bool waiting() const { return call != nullptr; }
};

enum class SlotAnswer { taken, refused, waiting };

// The slots of the limits of one worker of a protocol module (http_download,
// forward): in the counters plugins share across servers (memcache) when one
// answers, else in this server's own table. The shared counters answer
// later (ABI 1.8): the caller parks what needed the slot meanwhile, and
// nothing else of the worker waits. Worker only.
class Slots {
   public:
    Slots(const smp_core_api* core, smp_worker* worker, SharedCounters& counters)
        : core_(core), worker_(worker), counters_(counters) {}

    // Takes one of `limit` slots of `key` into `slot` (which holds none).
    // waiting: the shared counter answers later, to done(data, answer) on
    // the worker's loop, which hands the answer to answered(); release()
    // before that forgets the ask.
    SlotAnswer acquire(Slot& slot, uint64_t key, uint32_t limit, smp_async_done done, void* data);
    // The shared counter's answer to an acquire that was waiting: taken, or
    // refused (and `slot` holds none).
    SlotAnswer answered(Slot& slot, int answer);
    // Gives back what `slot` holds, or forgets an ask still waiting (a slot
    // the counter grants it then is given back by the plugin); `slot` holds
    // none after.
    void release(Slot& slot);
    // The worker that replaces a dead one gives back the shared slots it held.
    void give_back_dead_holders();

   private:
    const smp_core_api* core_;
    smp_worker* worker_;
    SharedCounters& counters_;
};

}  // namespace smp::http
