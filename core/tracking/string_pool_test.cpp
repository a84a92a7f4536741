#include "string_pool.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

using smp::SharedString;
using smp::StringPool;

TEST_CASE("a text interned twice is held once, and goes with its last handle") {
    StringPool pool;
    const std::string agent = "Mozilla/5.0 (X11; Linux x86_64)";
    SharedString first = pool.intern(agent);
    SharedString second = pool.intern(std::string(agent));  // another buffer, the same text
    CHECK(pool.size() == 1);
    CHECK(first == second);
    CHECK(first.view() == agent);
    CHECK(std::string(first.c_str()) == agent);
    CHECK(pool.find(agent) == first);
    CHECK_FALSE(pool.intern("curl/8.0") == first);
    CHECK(pool.size() == 1);  // curl's handle was a temporary: gone
    first = SharedString();
    CHECK(pool.size() == 1);
    second = SharedString();
    CHECK(pool.size() == 0);
    CHECK(pool.find(agent).empty());
}

TEST_CASE("the empty text is the empty handle and takes no entry") {
    StringPool pool;
    const SharedString empty = pool.intern("");
    CHECK(empty.empty());
    CHECK(empty == SharedString());
    CHECK(empty.view().empty());
    CHECK(std::string(empty.c_str()).empty());
    CHECK(pool.size() == 0);
}

TEST_CASE("copies and moves count references") {
    StringPool pool;
    SharedString original = pool.intern("a.bin");
    {
        SharedString copy = original;
        SharedString moved = std::move(copy);
        CHECK(copy.empty());
        SharedString assigned;
        assigned = moved;
        assigned = assigned;  // itself: no change
        CHECK(assigned.view() == "a.bin");
        original = SharedString();
        CHECK(pool.size() == 1);
    }
    CHECK(pool.size() == 0);
}

TEST_CASE("texts keep their numbers dense as others go, and are found after the moves") {
    StringPool pool;
    std::vector<SharedString> handles;
    for (int i = 0; i < 1000; ++i)
        handles.push_back(pool.intern("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256)));
    // Every other one goes: the last ones take their places.
    for (size_t i = 0; i < handles.size(); i += 2) handles[i] = SharedString();
    CHECK(pool.size() == 500);
    for (size_t i = 1; i < handles.size(); i += 2) {
        const std::string text = "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256);
        REQUIRE(handles[i].number() < pool.size());
        CHECK(pool.text(handles[i].number()) == text);
        CHECK(pool.find(text) == handles[i]);
    }
    CHECK(pool.find("10.0.0.0").empty());
    handles.clear();
    CHECK(pool.size() == 0);
}

TEST_CASE("a handle may outlive its pool") {
    SharedString kept;
    {
        auto pool = std::make_unique<StringPool>();
        kept = pool->intern("still here");
        const SharedString other = pool->intern("gone with the pool's last handle");
    }
    CHECK(kept.view() == "still here");
    SharedString copy = kept;
    kept = SharedString();
    CHECK(copy.view() == "still here");
}
