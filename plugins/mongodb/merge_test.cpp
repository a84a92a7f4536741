#include "merge.hpp"

#include <doctest/doctest.h>

using namespace smp::mongodb;

namespace {

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kWindow = 30 * 60 * kSecond;
constexpr uint64_t kMiB = 1 << 20;

Part part(const char* node, uint64_t id, std::vector<smp_interval> delivered, std::vector<smp_interval> active,
          uint32_t requests, smp_end_reason reason = SMP_END_COMPLETED) {
    Part p;
    p.node = node;
    p.id = id;
    p.requests = requests;
    p.file_size = 8 * kMiB;
    p.delivered = std::move(delivered);
    p.active = std::move(active);
    for (const auto& span : p.delivered) p.bytes_sent += span.last - span.first + 1;
    p.first_us = static_cast<int64_t>(p.active.front().first);
    p.last_us = static_cast<int64_t>(p.active.back().last);
    p.finished = true;
    p.reason = reason;
    return p;
}

}  // namespace

TEST_CASE("merge: segments of one download served by three nodes make one completed download") {
    // aria2c -x8 behind a round-robin balancer: eight 1 MiB segments, at
    // once, spread over n1, n2 and n3.
    const uint64_t t = 100 * kSecond;
    std::vector<Part> parts = {
        part("n2", 7, {{0, kMiB - 1}, {3 * kMiB, 4 * kMiB - 1}, {6 * kMiB, 7 * kMiB - 1}}, {{t, t + 2 * kSecond}}, 3,
             SMP_END_INCOMPLETE),
        part("n1", 4, {{kMiB, 2 * kMiB - 1}, {4 * kMiB, 5 * kMiB - 1}, {7 * kMiB, 8 * kMiB - 1}},
             {{t + 1000, t + 2 * kSecond + 5}}, 3, SMP_END_INCOMPLETE),
        part("n3", 9, {{2 * kMiB, 3 * kMiB - 1}, {5 * kMiB, 6 * kMiB - 1}}, {{t + 2000, t + kSecond}}, 2,
             SMP_END_INCOMPLETE),
    };
    const Merged merged = merge(parts);
    CHECK(merged.completed);
    CHECK(merged.reason == SMP_END_COMPLETED);
    CHECK(merged.distinct_bytes == 8 * kMiB);
    CHECK(merged.bytes_sent == 8 * kMiB);
    CHECK(merged.requests == 8);
    CHECK(merged.resumes == 0);  // parallel segments are not resumes
    CHECK(merged.nodes == std::vector<std::string>{"n1", "n2", "n3"});
    REQUIRE(merged.first != nullptr);
    CHECK(merged.first->node == "n2");  // the download's node and id: its first part's
    CHECK(merged.first_us == static_cast<int64_t>(t));
    CHECK(merged.last_us == static_cast<int64_t>(t + 2 * kSecond + 5));
    CHECK(merged.active_us == 2 * kSecond + 5);
    CHECK(merged.finished);

    SUBCASE("without its last part, it is not completed, and says why it ended") {
        parts.pop_back();
        const Merged partial = merge(parts);
        CHECK_FALSE(partial.completed);
        CHECK(partial.distinct_bytes == 6 * kMiB);
        CHECK(partial.reason == SMP_END_INCOMPLETE);
    }
    SUBCASE("one part still open: the download is open") {
        parts[1].finished = false;
        CHECK_FALSE(merge(parts).finished);
    }
}

TEST_CASE("merge: a download cut on one node and resumed on another has one resume") {
    const uint64_t t = 1000 * kSecond;
    const std::vector<Part> parts = {
        part("n1", 1, {{0, 3 * kMiB - 1}}, {{t, t + 3 * kSecond}}, 1, SMP_END_CLIENT_CLOSED),
        part("n2", 1, {{3 * kMiB, 8 * kMiB - 1}}, {{t + 5 * kSecond, t + 9 * kSecond}}, 1),
    };
    const Merged merged = merge(parts);
    CHECK(merged.completed);
    CHECK(merged.requests == 2);
    CHECK(merged.resumes == 1);
    CHECK(merged.active_us == 7 * kSecond);
    CHECK(merged.last_us - merged.first_us == 9 * kSecond);
}

TEST_CASE("merge: resumes are the gaps of the united spans, however the nodes interleave") {
    // n1 served requests 1 and 3, n2 request 2 in n1's gap: two resumes,
    // where adding n1's own count (1) to the gaps between the parts (0) says 1.
    const uint64_t t = 0;
    const std::vector<Part> parts = {
        part("n1", 1, {{0, kMiB - 1}, {2 * kMiB, 3 * kMiB - 1}}, {{t + 0, t + 10}, {t + 40, t + 50}}, 2),
        part("n2", 1, {{kMiB, 2 * kMiB - 1}}, {{t + 20, t + 30}}, 1),
    };
    CHECK(merge(parts).resumes == 2);
    CHECK(merge(parts).active_us == 30);
}

TEST_CASE("merge: overlapping bytes count once, and the repeats are sent bytes") {
    const std::vector<Part> parts = {
        part("n1", 1, {{0, 5 * kMiB - 1}}, {{0, 10}}, 1, SMP_END_CLIENT_CLOSED),
        part("n2", 2, {{4 * kMiB, 6 * kMiB - 1}}, {{20, 30}}, 1, SMP_END_CLIENT_CLOSED),
    };
    const Merged merged = merge(parts);
    CHECK(merged.distinct_bytes == 6 * kMiB);
    CHECK(merged.bytes_sent == 7 * kMiB);
    CHECK_FALSE(merged.completed);
    CHECK(merged.reason == SMP_END_CLIENT_CLOSED);  // the reason of the part that ended last
}

TEST_CASE("joins: within the window, and not a second fetch of a completed download") {
    const Merged cut = merge({part("n1", 1, {{0, kMiB - 1}}, {{0, kSecond}}, 1, SMP_END_CLIENT_CLOSED)});
    const Part later = part("n2", 1, {{kMiB, 8 * kMiB - 1}}, {{10 * kSecond, 20 * kSecond}}, 1);
    CHECK(joins(cut, later, kWindow));
    CHECK_FALSE(joins(cut, later, 5 * kSecond));  // idle longer than the window: a new download

    const Merged whole = merge({part("n1", 1, {{0, 8 * kMiB - 1}}, {{0, kSecond}}, 1)});
    const Part again = part("n2", 1, {{0, 8 * kMiB - 1}}, {{10 * kSecond, 20 * kSecond}}, 1);
    CHECK_FALSE(joins(whole, again, kWindow));  // the same client fetching the file again
    const Part parallel = part("n2", 1, {{0, kMiB - 1}}, {{kSecond / 2, 2 * kSecond}}, 1);
    CHECK(joins(whole, parallel, kWindow));  // began while the download was still running
}

TEST_CASE("merge_key: the client, agent, path and ETag, each field on its own") {
    smp_download a{};
    a.client_ip = "203.0.113.9";
    a.user_agent = "aria2/1.36.0";
    a.path = "/big.bin";
    a.etag = "\"1-2\"";
    smp_download b = a;
    CHECK(merge_key(a) == merge_key(b));
    b.path = "/big.bin2";
    CHECK(merge_key(a) != merge_key(b));
    // Where one field ends and the next begins is part of the key.
    b = a;
    b.client_ip = "203.0.113.9a";
    b.user_agent = "ria2/1.36.0";
    CHECK(merge_key(a) != merge_key(b));
}
