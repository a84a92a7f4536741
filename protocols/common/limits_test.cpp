#include "limits.hpp"

#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <new>
#include <random>
#include <string>
#include <vector>

using smp::http::limit_key;
using smp::http::SharedCounters;

TEST_CASE("a limit admits up to its number, and a release frees a slot") {
    SharedCounters counters(64);
    const uint64_t key = limit_key("ip", "192.0.2.1");
    CHECK(counters.acquire(key, 2));
    CHECK(counters.acquire(key, 2));
    CHECK_FALSE(counters.acquire(key, 2));
    CHECK(counters.count(key) == 2);
    counters.release(key);
    CHECK(counters.acquire(key, 2));
    CHECK(counters.acquire(limit_key("ip", "192.0.2.2"), 2));  // another client is another count
    CHECK(limit_key("u", "a", "bc") != limit_key("u", "ab", "c"));
}

TEST_CASE("processes forked after the table share it; a reaped holder's slot is free again") {
    SharedCounters counters(64);
    const uint64_t key = limit_key("download", "192.0.2.1", "big.bin");
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const char ok = counters.acquire(key, 1) ? 'y' : 'n';
        (void)!write(ready[1], &ok, 1);
        pause();  // killed by the parent while holding the slot
        _exit(0);
    }
    char ok = 0;
    REQUIRE(read(ready[0], &ok, 1) == 1);
    CHECK(ok == 'y');
    CHECK_FALSE(counters.acquire(key, 1));  // held by the child, from another process
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    CHECK_FALSE(counters.acquire(key, 1));  // until the master says the child is gone
    counters.forget_process(child);         // as the master does when it reaps a worker
    CHECK(counters.acquire(key, 1));        // the dead child's slot was reclaimed
    close(ready[0]);
    close(ready[1]);
}

TEST_CASE("the holdings of dead processes are reclaimed all at once, and said which") {
    SharedCounters counters(64);
    const uint64_t own = limit_key("ip", "192.0.2.1");
    const uint64_t noted = limit_key("download", "192.0.2.1", "big.bin") | smp::http::kSharedSlotBit;
    CHECK((own & smp::http::kSharedSlotBit) == 0);
    REQUIRE(counters.acquire(own, 5));  // this process's: kept
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const bool ok =
            counters.acquire(own, 5) && counters.acquire(noted, UINT32_MAX) && counters.acquire(noted, UINT32_MAX);
        (void)!write(ready[1], ok ? "y" : "n", 1);
        pause();
        _exit(0);
    }
    char ok = 0;
    REQUIRE(read(ready[0], &ok, 1) == 1);
    CHECK(ok == 'y');
    CHECK(counters.reclaim_dead().empty());  // the child is alive
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    counters.forget_process(child);
    auto reclaimed = counters.reclaim_dead();
    std::sort(reclaimed.begin(), reclaimed.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    REQUIRE(reclaimed.size() == 2);
    CHECK(reclaimed[0].key == own);
    CHECK(reclaimed[0].held == 1);
    CHECK(reclaimed[1].key == noted);
    CHECK(reclaimed[1].held == 2);
    CHECK(counters.count(own) == 1);  // this process's holding stays
    CHECK(counters.reclaim_dead().empty());
    close(ready[0]);
    close(ready[1]);
}

TEST_CASE("a process given a forgotten holder's pid inherits none of its slots") {
    // The pid of a reaped worker can come back in a new worker. The master
    // forgets the old holdings before it forks again, so the new process,
    // here this very process standing in for it, starts with nothing.
    SharedCounters counters(64);
    const uint64_t key = limit_key("ip", "192.0.2.7");
    REQUIRE(counters.acquire(key, 1));
    counters.forget_process(getpid());
    CHECK(counters.count(key) == 0);
    CHECK(counters.acquire(key, 1));  // the orphaned holding is reclaimed, this one taken
    CHECK(counters.count(key) == 1);
    counters.release(key);  // and the new holding is this process's own
    CHECK(counters.count(key) == 0);
}

namespace {
// Runs `work` in a child process with `seconds` to finish; true when it did.
template <class Work>
bool finishes_within(unsigned seconds, Work work) {
    const pid_t child = fork();
    if (child == 0) {
        alarm(seconds);
        work();
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
}  // namespace

TEST_CASE("a process killed while it holds a shared mutex does not keep it") {
    void* memory =
        mmap(nullptr, sizeof(smp::http::SharedMutex), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(memory != MAP_FAILED);
    auto* mutex = new (memory) smp::http::SharedMutex;
    mutex->init();
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const pid_t holder = fork();
    REQUIRE(holder >= 0);
    if (holder == 0) {
        mutex->lock();
        (void)!write(ready[1], "y", 1);
        pause();  // killed holding it
        _exit(0);
    }
    char ok = 0;
    REQUIRE(read(ready[0], &ok, 1) == 1);
    kill(holder, SIGKILL);
    waitpid(holder, nullptr, 0);
    CHECK(finishes_within(5, [&] {
        mutex->lock();
        mutex->unlock();
    }));
    CHECK(finishes_within(5, [&] {  // and after the takeover it works as before
        mutex->lock();
        mutex->unlock();
    }));
    close(ready[0]);
    close(ready[1]);
    munmap(memory, sizeof(smp::http::SharedMutex));
}

TEST_CASE("workers killed at random inside the table's operations leave it usable and exact") {
    // The reproduction of a freeze: a worker killed with SIGKILL while it held
    // the lock of the table left every other process waiting for ever.
    SharedCounters counters(256);
    const uint64_t key = limit_key("download", "192.0.2.1", "big.bin");
    std::mt19937 random(12345);
    for (int round = 0; round < 100; ++round) {
        const pid_t busy = fork();
        REQUIRE(busy >= 0);
        if (busy == 0) {
            for (uint64_t i = 0;; ++i) {
                const uint64_t other = limit_key("ip", std::to_string(i % 64));
                if (counters.acquire(other, 1000)) counters.release(other);
                if (counters.acquire(key, 1000)) counters.release(key);
            }
        }
        usleep(100 + random() % 2000);
        kill(busy, SIGKILL);
        waitpid(busy, nullptr, 0);
        counters.forget_process(busy);
        REQUIRE(finishes_within(5, [&] {
            if (!counters.acquire(key, 1)) _exit(2);  // no live holder: a slot must be free
            counters.release(key);
        }));
    }
    // Whatever the dead left half written, the table counts exactly.
    CHECK(counters.count(key) == 0);
    CHECK(counters.acquire(key, 2));
    CHECK(counters.acquire(key, 2));
    CHECK_FALSE(counters.acquire(key, 2));
    CHECK_FALSE(counters.full());
}

TEST_CASE("freed entries keep the table usable: many keys come and go") {
    SharedCounters counters(16);
    for (int round = 0; round < 1000; ++round) {
        const uint64_t key = limit_key("ip", std::to_string(round));
        REQUIRE(counters.acquire(key, 1));
        counters.release(key);
    }
    CHECK_FALSE(counters.full());
    for (int i = 0; i < 16; ++i) CHECK(counters.acquire(limit_key("ip", std::to_string(i)), 1));
    CHECK(counters.acquire(limit_key("ip", "one more"), 1));  // no room: admitted, and said
    CHECK(counters.full());
}

TEST_CASE("a shared budget grants its rate, whoever asks") {
    smp::http::SharedBuckets buckets(64);
    const uint64_t key = limit_key("rate", "192.0.2.1", "big.bin");
    constexpr uint64_t kRate = 1 << 20;
    uint64_t granted = 0;
    const int64_t start = 1'700'000'000'000'000;
    int64_t wait_us = 0;
    // Eight askers (segments), each asking for 64 KiB every millisecond, for 5 s.
    for (int64_t now = start; now < start + 5'000'000; now += 1000)
        for (int asker = 0; asker < 8; ++asker) granted += buckets.grant(key, 64 * 1024, kRate, now, wait_us);
    // 5 s of the rate, plus the burst of a tenth of a second at the start.
    CHECK(granted >= 5 * kRate);
    CHECK(granted <= 5 * kRate + kRate / 10 + 64 * 1024);
    CHECK(buckets.grant(key, 64 * 1024, kRate, start + 4'999'000, wait_us) == 0);  // spent
    CHECK(wait_us > 0);
    CHECK(buckets.grant(limit_key("rate", "other"), 1000, kRate, start + 5'000'000, wait_us) == 1000);
}

namespace {

// A core whose shared counter answers later, as memcache does: it remembers
// each ask, and what was released and cancelled.
struct LaterCounter {
    smp_async_done done = nullptr;
    void* data = nullptr;
    int asks = 0;
    int cancels = 0;
    std::vector<std::string> released;
};
LaterCounter later;
smp_async* const kCall = reinterpret_cast<smp_async*>(0x1);

int acquire_later(smp_worker*, const char*, uint32_t, uint32_t, smp_async_done done, void* data, smp_async** call) {
    ++later.asks;
    later.done = done;
    later.data = data;
    *call = kCall;
    return SMP_PENDING;
}
int acquire_sync(smp_worker*, const char*, uint32_t, uint32_t) { return -1; }
void release_shared(smp_worker*, const char* key) { later.released.emplace_back(key); }
void cancel(smp_worker*, smp_async* call) {
    CHECK(call == kCall);
    ++later.cancels;
}

smp_core_api later_core() {
    smp_core_api core{};
    core.size = sizeof core;
    core.limit_acquire = acquire_sync;
    core.limit_release = release_shared;
    core.limit_acquire_async = acquire_later;
    core.limit_cancel = cancel;
    return core;
}

void remember_answer(void* data, int answer) { *static_cast<int*>(data) = answer; }

}  // namespace

TEST_CASE("a slot the shared counter answers later: taken, refused, fallen back, forgotten") {
    using smp::http::Slot;
    using smp::http::SlotAnswer;
    later = {};
    const smp_core_api core = later_core();
    SharedCounters counters(64);
    smp::http::Slots slots(&core, nullptr, counters);
    const uint64_t key = limit_key("download", "192.0.2.1", "a.bin");
    int answer = -9;

    Slot slot;
    REQUIRE(slots.acquire(slot, key, 1, remember_answer, &answer) == SlotAnswer::waiting);
    CHECK(slot.waiting());
    CHECK(later.data == &answer);
    SUBCASE("taken: held in the shared counter, given back there") {
        CHECK(slots.answered(slot, 1) == SlotAnswer::taken);
        CHECK_FALSE(slot.waiting());
        CHECK(slot.shared);
        CHECK(counters.count(key) == 0);  // this server's own count is not used
        slots.release(slot);
        REQUIRE(later.released.size() == 1);
        char name[24];  // the counter's name: the key's hash in hex, as servers before named it
        std::snprintf(name, sizeof name, "l%016llx", static_cast<unsigned long long>(key));
        CHECK(later.released[0] == name);
        CHECK(slot.key == 0);
        CHECK(later.cancels == 0);
    }
    SUBCASE("refused: holds nothing, gives nothing back") {
        CHECK(slots.answered(slot, 0) == SlotAnswer::refused);
        CHECK(slot.key == 0);
        slots.release(slot);
        CHECK(later.released.empty());
    }
    SUBCASE("the counter cannot answer: this server's own limit decides") {
        CHECK(slots.answered(slot, -1) == SlotAnswer::taken);
        CHECK_FALSE(slot.shared);
        CHECK(counters.count(key) == 1);
        Slot second;
        REQUIRE(slots.acquire(second, key, 1, remember_answer, &answer) == SlotAnswer::waiting);
        CHECK(slots.answered(second, -1) == SlotAnswer::refused);  // one of one is held here
        slots.release(slot);
        CHECK(counters.count(key) == 0);
        CHECK(later.released.empty());
    }
    SUBCASE("released while waiting: the ask is cancelled, nothing is given back") {
        slots.release(slot);
        CHECK(later.cancels == 1);
        CHECK(later.released.empty());
        CHECK(slot.key == 0);
        CHECK_FALSE(slot.waiting());
    }
}
