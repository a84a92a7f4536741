#include "download_tracker.hpp"

#include <doctest/doctest.h>

#include <string>
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

namespace {

// A download of its own: a 206 of the first 100 bytes by client `agent`, ending at `at_s`.
struct Client {
    std::string agent;
    Request request;
    Client(const std::string& name, int64_t at_s, uint64_t last = 99)
        : agent(name), request(at_s, at_s, 0, last, 206, SMP_END_COMPLETED, nullptr) {
        request.record.user_agent = agent.c_str();
    }
};

uint64_t id_of(DownloadTracker& tracker, const Client& client) { return tracker.add(client.request.record)->id; }

}  // namespace

TEST_CASE("at the cap, a new download finishes the least recently active one early") {
    DownloadTracker tracker(kWindow, 3);
    Client a("a", 0), b("b", 1), c("c", 2, kSize - 1), d("d", 4);
    const uint64_t id_a = id_of(tracker, a);
    const uint64_t id_b = id_of(tracker, b);
    const uint64_t id_c = id_of(tracker, c);
    Client a_again("a", 3);
    tracker.add(a_again.request.record);  // a is now the most recently active
    const uint64_t id_d = id_of(tracker, d);
    CHECK(tracker.open_downloads() == 3);
    CHECK(tracker.finished_early() == 1);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_c, id_a, id_d});
    std::vector<LogicalDownload> done;
    tracker.expire(5 * kSecond, [&](const LogicalDownload& download) { done.push_back(download); });
    REQUIRE(done.size() == 1);
    CHECK(done[0].id == id_b);
    CHECK(done[0].finished_early);
    CHECK(done[0].reason() == SMP_END_TRACKING_CAP);
    // The next one finishes c, whose every byte was delivered: completed, however early.
    Client e("e", 5);
    tracker.add(e.request.record);
    done.clear();
    tracker.expire(6 * kSecond, [&](const LogicalDownload& download) { done.push_back(download); });
    REQUIRE(done.size() == 1);
    CHECK(done[0].id == id_c);
    CHECK(done[0].reason() == SMP_END_COMPLETED);
    CHECK(tracker.open_downloads() == 3);
    CHECK(tracker.finished_early() == 2);
}

TEST_CASE("a request moves its download to the back of the activity order") {
    DownloadTracker tracker(kWindow);
    Client a("a", 0), b("b", 1), c("c", 2);
    const uint64_t id_a = id_of(tracker, a);
    const uint64_t id_b = id_of(tracker, b);
    const uint64_t id_c = id_of(tracker, c);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_a, id_b, id_c});
    Client b_again("b", 3), a_again("a", 4);
    tracker.add(b_again.request.record);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_a, id_c, id_b});
    tracker.add(a_again.request.record);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_c, id_b, id_a});
    // A request for the last one leaves the order as it is.
    tracker.add(a_again.request.record);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_c, id_b, id_a});
}

TEST_CASE("the idle scan finishes only the idle downloads and stops at the first active one") {
    const int64_t window = 30 * kSecond;
    DownloadTracker tracker(window);
    Client a("a", 0), b("b", 10), c("c", 20);
    const uint64_t id_a = id_of(tracker, a);
    const uint64_t id_b = id_of(tracker, b);
    const uint64_t id_c = id_of(tracker, c);
    std::vector<uint64_t> done;
    const auto finished = [&](const LogicalDownload& download) { done.push_back(download.id); };
    uint64_t visited = tracker.visited();
    tracker.expire(35 * kSecond, finished);
    CHECK(done == std::vector<uint64_t>{id_a});
    CHECK(tracker.visited() - visited == 2);  // a, finished; b, still active: the scan stops
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_b, id_c});
    visited = tracker.visited();
    tracker.expire(40 * kSecond, finished);  // not past b's window yet
    CHECK(done.size() == 1);
    CHECK(tracker.visited() - visited == 1);
    tracker.expire(51 * kSecond, finished);
    CHECK(done == std::vector<uint64_t>{id_a, id_b, id_c});
    CHECK(tracker.open_downloads() == 0);
}

TEST_CASE("a tick visits the downloads that changed, not every open one") {
    DownloadTracker tracker(kWindow);
    std::vector<Client> clients;
    clients.reserve(1000);
    for (int i = 0; i < 1000; ++i) clients.emplace_back("agent-" + std::to_string(i), 0);
    for (const auto& client : clients) tracker.add(client.request.record);
    size_t changed = 0;
    tracker.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(changed == 1000);
    // Three of them grow; a tick (the idle scan, then the changed ones) looks
    // at those three and at the least recently active download, no more.
    for (int i : {7, 500, 999}) tracker.add(clients[static_cast<size_t>(i)].request.record);
    const uint64_t visited = tracker.visited();
    int finished = 0;
    tracker.expire(kSecond, [&](const LogicalDownload&) { ++finished; });
    changed = 0;
    tracker.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(finished == 0);
    CHECK(changed == 3);
    CHECK(tracker.visited() - visited == 4);
    // A finished download is not reported as changed as well.
    tracker.add(clients[1].request.record);
    tracker.expire(INT64_MAX / 2, [&](const LogicalDownload&) { ++finished; });
    changed = 0;
    tracker.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(finished == 1000);
    CHECK(changed == 0);
}
