#include "download_tracker.hpp"

#include <doctest/doctest.h>

#include <vector>

using smp::DownloadTracker;
using smp::LogicalDownload;

namespace {

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kWindow = 30 * 60 * kSecond;
constexpr uint64_t kSize = 20 * 1024 * 1024;

// One request's record: GET of /big.bin answered `status`, bytes [first, last] sent.
struct Request {
    std::vector<smp_interval> intervals;
    smp_record record{};

    Request(int64_t start_s, int64_t end_s, uint64_t first, uint64_t last, int status = 206,
            smp_end_reason reason = SMP_END_COMPLETED, const char* agent = "aria2/1.36", const char* etag = "\"e1\"",
            const char* path = "big.bin") {
        intervals.push_back({first, last});
        record.size = sizeof record;
        record.method = "GET";
        record.status = status;
        record.path = path;
        record.etag = etag;
        record.client_ip = "192.0.2.7";
        record.user_agent = agent;
        record.file_size = static_cast<int64_t>(kSize);
        record.start_us = start_s * kSecond;
        record.end_us = end_s * kSecond;
        record.reason = reason;
        record.intervals = intervals.data();
        record.interval_count = intervals.size();
    }
};

std::vector<LogicalDownload> finish_all(DownloadTracker& tracker) {
    std::vector<LogicalDownload> done;
    tracker.expire(INT64_MAX / 2, [&](const LogicalDownload& d) { done.push_back(d); });
    return done;
}

}  // namespace

TEST_CASE("eight parallel segments are one completed download") {
    DownloadTracker tracker(kWindow);
    const uint64_t segment = kSize / 8;
    // aria2c first asks for the whole file, then cuts it into segments; the
    // first connection stops where the second segment starts.
    for (uint64_t i = 0; i < 8; ++i) {
        Request r(10, 12, i * segment, i * segment + segment - 1, i == 0 ? 200 : 206,
                  i == 0 ? SMP_END_CLIENT_CLOSED : SMP_END_COMPLETED);
        tracker.add(r.record);
    }
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 1);
    CHECK(done[0].requests == 8);
    CHECK(done[0].resumes == 0);
    CHECK(done[0].completed());
    CHECK(done[0].coverage() == doctest::Approx(1.0));
    CHECK(done[0].wasted_bytes() == 0);
    CHECK(done[0].reason() == SMP_END_COMPLETED);
    CHECK(done[0].active_us() == 2 * kSecond);
}

TEST_CASE("a cut and a resume are one download with one resume") {
    DownloadTracker tracker(kWindow);
    Request first(0, 5, 0, kSize / 2 - 1, 200, SMP_END_CLIENT_CLOSED);
    Request second(60, 65, kSize / 2 - 1000, kSize - 1);  // overlaps by 1000 bytes
    tracker.add(first.record);
    tracker.add(second.record);
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 1);
    CHECK(done[0].requests == 2);
    CHECK(done[0].resumes == 1);
    CHECK(done[0].completed());
    CHECK(done[0].wasted_bytes() == 1000);
    CHECK(done[0].wall_us() == 65 * kSecond);
    CHECK(done[0].active_us() == 2 * 5 * kSecond);
}

TEST_CASE("an abort halfway is one incomplete download with its reason") {
    DownloadTracker tracker(kWindow);
    Request only(0, 3, 0, kSize / 2 - 1, 200, SMP_END_CLIENT_CLOSED);
    tracker.add(only.record);
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 1);
    CHECK_FALSE(done[0].completed());
    CHECK(done[0].coverage() == doctest::Approx(0.5));
    CHECK(done[0].reason() == SMP_END_CLIENT_CLOSED);
}

TEST_CASE("another ETag, agent, file, or a gap past the idle window starts a new download") {
    DownloadTracker tracker(kWindow);
    Request a(0, 1, 0, 99);
    Request new_etag(2, 3, 100, 199, 206, SMP_END_COMPLETED, "aria2/1.36", "\"e2\"");
    Request other_agent(2, 3, 100, 199, 206, SMP_END_COMPLETED, "curl/7.88");
    Request other_file(2, 3, 100, 199, 206, SMP_END_COMPLETED, "aria2/1.36", "\"e1\"", "other.bin");
    Request much_later(kWindow / kSecond + 10, kWindow / kSecond + 11, 100, 199);
    for (auto* r : {&a, &new_etag, &other_agent, &other_file, &much_later}) REQUIRE(tracker.add(r->record));
    CHECK(finish_all(tracker).size() == 5);
}

TEST_CASE("only GET answered 200 or 206 takes part in downloads") {
    DownloadTracker tracker(kWindow);
    Request head(0, 1, 0, 0);
    head.record.method = "HEAD";
    Request not_modified(0, 1, 0, 0, 304);
    Request not_found(0, 1, 0, 0, 404);
    not_found.record.etag = nullptr;
    Request unsatisfiable(0, 1, 0, 0, 416);
    for (auto* r : {&head, &not_modified, &not_found, &unsatisfiable}) CHECK(tracker.add(r->record) == nullptr);
    CHECK(tracker.open_downloads() == 0);
}

TEST_CASE("a download stays open until the idle window has passed") {
    DownloadTracker tracker(kWindow);
    Request r(0, 1, 0, 99);
    tracker.add(r.record);
    int finished = 0;
    tracker.expire(kWindow, [&](const LogicalDownload&) { ++finished; });
    CHECK(finished == 0);
    tracker.expire(kWindow + 2 * kSecond, [&](const LogicalDownload&) { ++finished; });
    CHECK(finished == 1);
}

TEST_CASE("downloading a completed file again is a new download") {
    DownloadTracker tracker(kWindow);
    Request first(0, 1, 0, kSize - 1, 200);
    Request again(5, 6, 0, kSize - 1, 200);
    Request resumed(8, 9, 100, kSize - 1, 206);  // a range after completion continues the latest download
    tracker.add(first.record);
    tracker.add(again.record);
    tracker.add(resumed.record);
    CHECK(tracker.finished_downloads() == 1);
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 2);
    CHECK(done[0].requests == 1);
    CHECK(done[1].requests == 2);
    CHECK(done[1].wasted_bytes() == kSize - 100);
}

TEST_CASE("a whole-file request that ends after the segments stays in the download") {
    DownloadTracker tracker(kWindow);
    const uint64_t half = kSize / 2;
    Request second_half(1, 2, half, kSize - 1, 206);
    Request first_half(1, 2, 0, half - 1, 206);
    Request first_connection(0, 3, 0, half + 999, 200, SMP_END_CLIENT_CLOSED);  // began first, closed last
    tracker.add(second_half.record);
    tracker.add(first_half.record);
    tracker.add(first_connection.record);
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 1);
    CHECK(done[0].requests == 3);
    CHECK(done[0].completed());
}

TEST_CASE("a part asked for and delivered, and no more, is an incomplete download") {
    DownloadTracker tracker(kWindow);
    Request part(0, 1, 0, 99, 206, SMP_END_COMPLETED);
    tracker.add(part.record);
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 1);
    CHECK_FALSE(done[0].completed());
    CHECK(done[0].reason() == SMP_END_INCOMPLETE);
}
