#include "limits.hpp"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

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

TEST_CASE("processes forked after the table share it; a dead holder's slot is free again") {
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
    CHECK(counters.acquire(key, 1));  // the dead child's slot was reclaimed
    close(ready[0]);
    close(ready[1]);
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
