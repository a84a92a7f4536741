#include "limits.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <system_error>

namespace smp::http {
namespace {
constexpr uint64_t kEmpty = 0;
constexpr uint64_t kTombstone = 1;
constexpr int32_t kOrphaned = 0;  // no process has pid 0

uint64_t fnv1a(uint64_t hash, std::string_view data) {
    for (const unsigned char c : data) hash = (hash ^ c) * 0x100000001b3ull;
    return hash;
}

// The name of a limit's key in the shared counters: its hash in hex
// ("l%016llx", written by hand: this runs twice for every shared slot).
void slot_name(uint64_t key, char (&name)[24]) {
    constexpr char kHex[] = "0123456789abcdef";
    name[0] = 'l';
    for (int i = 16; i >= 1; --i, key >>= 4) name[i] = kHex[key & 0xf];
    name[17] = '\0';
}

// A shared slot is also noted in this server's own table under this key, with
// the pid of its holder: the slots of a worker that died are given back to the
// shared counters by the next request for the same key, or by the worker
// that replaces it (give_back_dead_holders).
uint64_t shadow_of(uint64_t key) { return key | kSharedSlotBit; }

// This process's pid: glibc's getpid() is a system call, and every acquire
// and release asks. Kept, and taken again in the child of every fork.
pid_t this_process() {
    static pid_t pid = [] {
        pthread_atfork(nullptr, nullptr, [] { pid = getpid(); });
        return getpid();
    }();
    return pid;
}

// limit_acquire and limit_release are ABI 1.3: an older core has neither.
bool core_shares_counters(const smp_core_api* core) { return SMP_HAS(core, limit_release); }
}  // namespace

bool ModuleLimits::read(const smp_config_value& unique_ip_value, const smp_config_value& max_connections_per_ip_value,
                        const smp_config_value& limit_rate_value, const smp_config_value& limit_rate_after_value,
                        const char*& bad_key, const char*& problem) {
    unique_ip = unique_ip_value.number != 0;
    if (max_connections_per_ip_value.number < 0 || max_connections_per_ip_value.number > 1'000'000) {
        bad_key = "max_connections_per_ip";
        problem = "must be between 0 (no limit) and 1000000";
        return false;
    }
    max_connections_per_ip = static_cast<uint32_t>(max_connections_per_ip_value.number);
    limit_rate = static_cast<uint64_t>(limit_rate_value.number);
    limit_rate_after = static_cast<uint64_t>(limit_rate_after_value.number);
    return true;
}

RateAllowance rate_allowance(uint64_t rate, uint64_t after, uint64_t start_ms, uint64_t sent, uint64_t now_ms) {
    const uint64_t allowed = after + rate * (now_ms - start_ms) / 1000;
    if (allowed > sent) return {allowed - sent, 0};
    const uint64_t quantum = std::max<uint64_t>(rate / 10, 1);
    return {0, (sent + quantum - allowed) * 1000 / rate + 1};
}

uint64_t limit_key(std::string_view kind, std::string_view a, std::string_view b) {
    uint64_t hash = fnv1a(0xcbf29ce484222325ull, kind);
    hash = fnv1a(fnv1a(hash, {"\0", 1}), a);
    hash = fnv1a(fnv1a(hash, {"\0", 1}), b) & ~kSharedSlotBit;
    return hash <= kTombstone ? hash + 2 : hash;  // 0 and 1 mark entries
}

void SharedMutex::init() {
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    const int error = pthread_mutex_init(&mutex_, &attributes);
    pthread_mutexattr_destroy(&attributes);
    if (error != 0) throw std::system_error(error, std::generic_category(), "a shared mutex for the limits");
}

void SharedMutex::lock() {
    // EOWNERDEAD: the holder died inside a critical section. Every step of
    // one leaves the table usable (see the class comment), so the lock is
    // simply taken over; the master forgets the dead process's holdings.
    if (pthread_mutex_lock(&mutex_) == EOWNERDEAD) pthread_mutex_consistent(&mutex_);
}

void SharedMutex::unlock() { pthread_mutex_unlock(&mutex_); }

SharedCounters::SharedCounters(uint32_t capacity)
    : capacity_(capacity), bytes_(sizeof(Table) + (capacity - 1) * sizeof(Entry)) {
    void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap of the limits table");
    table_ = new (memory) Table{};  // anonymous memory is zero: every entry empty
    table_->mutex.init();
}

SharedCounters::~SharedCounters() { munmap(table_, bytes_); }

void SharedCounters::vacate(uint32_t at) {
    // A tombstone keeps later entries of a probe run reachable; one with an
    // empty entry after it is not needed, nor are the tombstones before it.
    Entry* entries = table_->entries;
    const uint32_t mask = capacity_ - 1;
    entries[at].key = kTombstone;
    if (entries[(at + 1) & mask].key != kEmpty) return;
    while (entries[at].key == kTombstone) {
        entries[at].key = kEmpty;
        at = (at - 1) & mask;
    }
}

bool SharedCounters::full() const { return table_->full.load() != 0; }

bool SharedCounters::acquire(uint64_t key, uint32_t limit) {
    const pid_t self = this_process();
    table_->mutex.lock();
    uint32_t held = 0;
    Entry* mine = nullptr;
    Entry* free_entry = nullptr;
    // The holdings of one key lie on its probe run, up to the first empty entry.
    for (uint32_t i = 0, at = static_cast<uint32_t>(key) & (capacity_ - 1); i < capacity_;
         ++i, at = (at + 1) & (capacity_ - 1)) {
        Entry& e = table_->entries[at];
        // A dead process's slot is freed first: it may leave an empty entry,
        // which ends the run (a holding put past it could not be found again).
        if (e.key == key && e.pid == kOrphaned) vacate(at);
        if (e.key == kEmpty) {
            if (free_entry == nullptr) free_entry = &e;
            break;
        }
        if (e.key == kTombstone) {
            if (free_entry == nullptr) free_entry = &e;
            continue;
        }
        if (e.key != key) continue;
        held += e.held;
        if (e.pid == self) mine = &e;
    }
    bool admitted = held < limit;
    if (admitted) {
        if (mine != nullptr) {
            ++mine->held;
        } else if (free_entry != nullptr) {
            // The key last: a process killed before it leaves the entry free.
            free_entry->pid = self;
            free_entry->held = 1;
            std::atomic_thread_fence(std::memory_order_release);
            free_entry->key = key;
        } else {
            table_->full.store(1);  // fail open: a full table must not refuse everyone
        }
    }
    table_->mutex.unlock();
    return admitted;
}

void SharedCounters::release(uint64_t key) {
    const pid_t self = this_process();
    table_->mutex.lock();
    for (uint32_t i = 0, at = static_cast<uint32_t>(key) & (capacity_ - 1); i < capacity_;
         ++i, at = (at + 1) & (capacity_ - 1)) {
        Entry& e = table_->entries[at];
        if (e.key == kEmpty) break;
        if (e.key != key || e.pid != self) continue;
        if (--e.held == 0) vacate(at);
        break;
    }
    table_->mutex.unlock();
}

uint32_t SharedCounters::reclaim(uint64_t key) {
    table_->mutex.lock();
    uint32_t reclaimed = 0;
    for (uint32_t i = 0, at = static_cast<uint32_t>(key) & (capacity_ - 1); i < capacity_;
         ++i, at = (at + 1) & (capacity_ - 1)) {
        Entry& e = table_->entries[at];
        if (e.key == kEmpty) break;
        if (e.key != key || e.pid != kOrphaned) continue;
        reclaimed += e.held;
        vacate(at);
    }
    table_->mutex.unlock();
    return reclaimed;
}

void SharedCounters::forget_process(pid_t pid) {
    table_->mutex.lock();
    for (uint32_t at = 0; at < capacity_; ++at) {
        Entry& e = table_->entries[at];
        if (e.key != kEmpty && e.key != kTombstone && e.pid == pid) e.pid = kOrphaned;
    }
    table_->mutex.unlock();
}

std::vector<SharedCounters::Holding> SharedCounters::reclaim_dead() {
    std::vector<Holding> reclaimed;
    table_->mutex.lock();
    for (uint32_t at = 0; at < capacity_; ++at) {
        Entry& e = table_->entries[at];
        if (e.key == kEmpty || e.key == kTombstone || e.pid != kOrphaned) continue;
        reclaimed.push_back({e.key, e.held});
        vacate(at);
    }
    table_->mutex.unlock();
    return reclaimed;
}

uint32_t SharedCounters::count(uint64_t key) {
    table_->mutex.lock();
    uint32_t held = 0;
    for (uint32_t i = 0, at = static_cast<uint32_t>(key) & (capacity_ - 1); i < capacity_;
         ++i, at = (at + 1) & (capacity_ - 1)) {
        const Entry& e = table_->entries[at];
        if (e.key == kEmpty) break;
        if (e.key == key && e.pid != kOrphaned) held += e.held;
    }
    table_->mutex.unlock();
    return held;
}

SharedBuckets::SharedBuckets(uint32_t capacity)
    : capacity_(capacity), bytes_(sizeof(Table) + (capacity - 1) * sizeof(Bucket)) {
    void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap of the rate table");
    table_ = new (memory) Table{};
    table_->mutex.init();
}

SharedBuckets::~SharedBuckets() { munmap(table_, bytes_); }

uint64_t SharedBuckets::grant(uint64_t key, uint64_t want, uint64_t rate, int64_t now_us, int64_t& wait_us) {
    constexpr int64_t kBurstNs = 100'000'000;  // a tenth of a second of the rate may go at once
    constexpr int kProbes = 8;
    const int64_t now = now_us * 1000;  // nanoseconds: small grants must not round to no time
    // Nothing smaller than a hundredth of a second's worth is granted: many
    // tiny grants would cost more than the bytes they let through.
    const uint64_t quantum = std::min<uint64_t>(want, std::max<uint64_t>(rate / 100, 1));
    const auto duration = [rate](uint64_t bytes) { return static_cast<int64_t>(bytes * 1'000'000'000 / rate); };
    table_->mutex.lock();
    // A bucket whose tat is past is full again, as good as free: a key takes
    // its own bucket, or the first idle one on its probe run.
    Bucket* bucket = nullptr;
    for (int i = 0; i < kProbes; ++i) {
        Bucket& b = table_->buckets[(static_cast<uint32_t>(key) + i) & (capacity_ - 1)];
        if (b.key == key) {
            bucket = &b;
            break;
        }
        if (bucket == nullptr && b.tat_ns < now - kBurstNs) bucket = &b;
    }
    uint64_t granted = want;  // every bucket on the run busy: admit rather than stall
    wait_us = 0;
    if (bucket != nullptr) {
        if (bucket->key != key) *bucket = Bucket{key, now};
        const int64_t tat = std::max(bucket->tat_ns, now);
        const int64_t room_ns = now + kBurstNs - tat;
        const uint64_t room = room_ns > 0 ? static_cast<uint64_t>(room_ns) * rate / 1'000'000'000 : 0;
        granted = room >= quantum ? std::min(want, room) : 0;
        if (granted == 0) wait_us = (tat - kBurstNs + duration(quantum) - now) / 1000 + 1;
        bucket->tat_ns = tat + duration(granted);
    }
    table_->mutex.unlock();
    return granted;
}

void Slots::give_back_dead_holders() {
    if (!core_shares_counters(core_)) return;
    for (const SharedCounters::Holding& holding : counters_.reclaim_dead()) {
        if ((holding.key & kSharedSlotBit) == 0) continue;
        char name[24];
        slot_name(holding.key & ~kSharedSlotBit, name);
        for (uint32_t i = 0; i < holding.held; ++i) core_->limit_release(worker_, name);
    }
}

SlotAnswer Slots::acquire(Slot& slot, uint64_t key, uint32_t limit, smp_async_done done, void* data) {
    slot = Slot{key, false, nullptr, limit};
    if (!core_shares_counters(core_)) return answered(slot, -1);
    char name[24];
    slot_name(key, name);
    // Given back before the ask, and sent before it: the dead holders' slots are free for it.
    for (uint32_t dead = counters_.reclaim(shadow_of(key)); dead > 0; --dead) core_->limit_release(worker_, name);
    // limit_acquire_async is ABI 1.8; an older core answers at once.
    const int answer = SMP_HAS(core_, limit_acquire_async)
                           ? core_->limit_acquire_async(worker_, name, limit, 0, done, data, &slot.call)
                           : core_->limit_acquire(worker_, name, limit, 0);
    if (answer == SMP_PENDING) return SlotAnswer::waiting;
    return answered(slot, answer);
}

SlotAnswer Slots::answered(Slot& slot, int answer) {
    slot.call = nullptr;
    if (answer == 1) {
        slot.shared = true;
        counters_.acquire(shadow_of(slot.key), UINT32_MAX);
        return SlotAnswer::taken;
    }
    // -1: no shared counter can answer, so this server's own counts.
    if (answer == 0 || !counters_.acquire(slot.key, slot.limit)) {
        slot = {};
        return SlotAnswer::refused;
    }
    return SlotAnswer::taken;
}

void Slots::release(Slot& slot) {
    if (slot.key == 0) return;
    if (slot.waiting()) {
        core_->limit_cancel(worker_, slot.call);
    } else if (!slot.shared) {
        counters_.release(slot.key);
    } else {
        char name[24];
        slot_name(slot.key, name);
        core_->limit_release(worker_, name);
        counters_.release(shadow_of(slot.key));
    }
    slot = {};
}

}  // namespace smp::http
