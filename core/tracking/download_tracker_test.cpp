#include "download_tracker.hpp"

#include <doctest/doctest.h>

#include <malloc.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer's count of what is allocated. GCC ships no header for
// its allocator interface (clang's is sanitizer/allocator_interface.h).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

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

// Ids as the collector gives them: one for each record, taken by the
// download the record opens.
uint64_t last_id = 0;
const LogicalDownload* add(DownloadTracker& tracker, const smp_record& record) {
    return tracker.add(record, ++last_id);
}

std::vector<LogicalDownload> finish_all(DownloadTracker& tracker) {
    std::vector<LogicalDownload> done;
    tracker.finish_all([&](const LogicalDownload& d) { done.push_back(d); });
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
        add(tracker, r.record);
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

TEST_CASE("a resume counts the same whichever record arrives first") {
    // Two workers served the cut request and its resume: their records may
    // reach the collector in either order (test_dashboard saw 0 resumes).
    for (const bool resume_first : {false, true}) {
        CAPTURE(resume_first);
        DownloadTracker tracker(kWindow);
        Request first(0, 5, 0, kSize / 2 - 1, 200, SMP_END_CLIENT_CLOSED);
        Request second(60, 65, kSize / 2, kSize - 1);
        Request third(70, 80, 0, 9);     // overlaps nothing in time: a second resume
        Request during(72, 74, 10, 19);  // within the third: no resume
        for (Request* request : resume_first ? std::vector<Request*>{&during, &third, &second, &first}
                                             : std::vector<Request*>{&first, &second, &third, &during})
            add(tracker, request->record);
        const auto done = finish_all(tracker);
        REQUIRE(done.size() == 1);
        CHECK(done[0].requests == 4);
        CHECK(done[0].resumes == 2);
    }
}

TEST_CASE("a cut and a resume are one download with one resume") {
    DownloadTracker tracker(kWindow);
    Request first(0, 5, 0, kSize / 2 - 1, 200, SMP_END_CLIENT_CLOSED);
    Request second(60, 65, kSize / 2 - 1000, kSize - 1);  // overlaps by 1000 bytes
    add(tracker, first.record);
    add(tracker, second.record);
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
    add(tracker, only.record);
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
    for (auto* r : {&a, &new_etag, &other_agent, &other_file, &much_later}) REQUIRE(add(tracker, r->record));
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
    for (auto* r : {&head, &not_modified, &not_found, &unsatisfiable}) CHECK(add(tracker, r->record) == nullptr);
    CHECK(tracker.open_downloads() == 0);
}

TEST_CASE("a download stays open until the idle window has passed") {
    DownloadTracker tracker(kWindow);
    Request r(0, 1, 0, 99);
    add(tracker, r.record);
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
    add(tracker, first.record);
    add(tracker, again.record);
    add(tracker, resumed.record);
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
    add(tracker, second_half.record);
    add(tracker, first_half.record);
    add(tracker, first_connection.record);
    const auto done = finish_all(tracker);
    REQUIRE(done.size() == 1);
    CHECK(done[0].requests == 3);
    CHECK(done[0].completed());
}

TEST_CASE("a part asked for and delivered, and no more, is an incomplete download") {
    DownloadTracker tracker(kWindow);
    Request part(0, 1, 0, 99, 206, SMP_END_COMPLETED);
    add(tracker, part.record);
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

uint64_t id_of(DownloadTracker& tracker, const Client& client) { return add(tracker, client.request.record)->id; }

}  // namespace

TEST_CASE("at the cap, a new download finishes the least recently active one early") {
    DownloadTracker tracker(kWindow, 3);
    Client a("a", 0), b("b", 1), c("c", 2, kSize - 1), d("d", 4);
    const uint64_t id_a = id_of(tracker, a);
    const uint64_t id_b = id_of(tracker, b);
    const uint64_t id_c = id_of(tracker, c);
    Client a_again("a", 3);
    add(tracker, a_again.request.record);  // a is now the most recently active
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
    add(tracker, e.request.record);
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
    add(tracker, b_again.request.record);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_a, id_c, id_b});
    add(tracker, a_again.request.record);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{id_c, id_b, id_a});
    // A request for the last one leaves the order as it is.
    add(tracker, a_again.request.record);
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
    for (const auto& client : clients) add(tracker, client.request.record);
    size_t changed = 0;
    tracker.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(changed == 1000);
    // Three of them grow; a tick (the idle scan, then the changed ones) looks
    // at those three and at the least recently active download, no more.
    for (int i : {7, 500, 999}) add(tracker, clients[static_cast<size_t>(i)].request.record);
    const uint64_t visited = tracker.visited();
    int finished = 0;
    tracker.expire(kSecond, [&](const LogicalDownload&) { ++finished; });
    changed = 0;
    tracker.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(finished == 0);
    CHECK(changed == 3);
    CHECK(tracker.visited() - visited == 4);
    // A finished download is not reported as changed as well.
    add(tracker, clients[1].request.record);
    tracker.expire(INT64_MAX / 2, [&](const LogicalDownload&) { ++finished; });
    changed = 0;
    tracker.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(finished == 1000);
    CHECK(changed == 0);
}

TEST_CASE("a download younger than the given start is handed out as changed later, or once finished") {
    DownloadTracker tracker(kWindow);
    Request early(0, 1, 0, 99);                                              // began at 0 s
    Request whole(5, 5, 0, kSize - 1, 200, SMP_END_COMPLETED, "wget/1.21");  // a whole file at 5 s
    const uint64_t early_id = add(tracker, early.record)->id;
    const uint64_t whole_id = add(tracker, whole.record)->id;
    std::vector<uint64_t> changed;
    const auto collect = [&](const LogicalDownload& d) { changed.push_back(d.id); };
    tracker.each_changed(collect, 5 * kSecond);
    CHECK(changed == std::vector<uint64_t>{early_id});
    // Fetched again a second later: the whole one ends, never handed out open.
    Request again(6, 6, 0, kSize - 1, 200, SMP_END_COMPLETED, "wget/1.21");
    const uint64_t again_id = add(tracker, again.record)->id;
    CHECK(again_id != whole_id);
    std::vector<uint64_t> finished;
    tracker.expire(6 * kSecond, [&](const LogicalDownload& d) { finished.push_back(d.id); });
    CHECK(finished == std::vector<uint64_t>{whole_id});
    changed.clear();
    tracker.each_changed(collect, 6 * kSecond);
    CHECK(changed.empty());
    tracker.each_changed(collect, 6 * kSecond + 1);
    CHECK(changed == std::vector<uint64_t>{again_id});
}

TEST_CASE("a download takes the id given with the record that opens it, and keeps it") {
    DownloadTracker tracker(kWindow);
    Request first(0, 1, 0, 99);
    Request second(2, 3, 100, 199);
    Request other_file(2, 3, 0, 99, 206, SMP_END_COMPLETED, "aria2/1.36", "\"e1\"", "other.bin");
    CHECK(tracker.add(first.record, 7001)->id == 7001);
    CHECK(tracker.add(second.record, 7002)->id == 7001);  // joins: the id is the first record's
    CHECK(tracker.add(other_file.record, 7003)->id == 7003);
    CHECK(tracker.ids_by_activity() == std::vector<uint64_t>{7001, 7003});
}

// ---- snapshots ----

namespace {

// Everything a download holds, as text, to compare two trackers.
std::string describe(const LogicalDownload& d) {
    std::ostringstream text;
    text << d.id << ' ' << d.node.view() << ' ' << d.client_ip.view() << " '" << d.user_agent.view() << "' "
         << d.path.view() << ' ' << d.etag.view() << ' ' << d.file_size << ' ' << d.bytes_sent << ' ' << d.requests
         << ' ' << d.resumes << ' ' << d.first_us << ' ' << d.last_us << ' ' << d.last_reason << ' '
         << d.finished_early;
    for (const smp::IntervalSet* set : {&d.delivered, &d.active}) {
        text << " |";
        for (const auto& interval : set->intervals()) text << ' ' << interval.first << '-' << interval.last;
    }
    return text.str();
}

std::vector<std::string> expire_described(DownloadTracker& tracker, int64_t now_us) {
    std::vector<std::string> done;
    tracker.expire(now_us, [&](const LogicalDownload& d) { done.push_back(describe(d)); });
    return done;
}

std::vector<std::string> changed_described(DownloadTracker& tracker) {
    std::vector<std::string> changed;
    tracker.each_changed([&](const LogicalDownload& d) { changed.push_back(describe(d)); });
    return changed;
}

std::string snapshot_of(const DownloadTracker& tracker) {
    std::string snapshot;
    tracker.save(snapshot);
    return snapshot;
}

constexpr size_t kVariedCap = 4;

// Records that leave a tracker (capped at four) with a bit of everything:
// downloads of one interval and of several, a forwarded client without a
// user agent from another node, two ended but not handed out yet (one
// downloaded again, one finished early at the cap), some already handed out
// as changed and some not.
void fill_varied(DownloadTracker& tracker, std::vector<Request>& requests) {
    requests.reserve(8);
    requests.emplace_back(0, 1, 0, 99);
    requests.emplace_back(2, 3, 200, 299);  // the same download: a second interval, a resume
    requests.emplace_back(4, 5, 0, kSize - 1, 200, SMP_END_COMPLETED, "curl/8.0");
    requests.emplace_back(6, 7, 0, kSize - 1, 200, SMP_END_COMPLETED, "curl/8.0");  // again: a new download
    requests.emplace_back(8, 9, 0, 4095, 206, SMP_END_CLIENT_CLOSED, nullptr, "\"e2\"", "other.bin");
    requests.back().record.forwarded_ip = "203.0.113.9";
    requests.back().record.node = "edge-2";
    requests.emplace_back(10, 11, 0, 99, 206, SMP_END_COMPLETED, "Wget/1.21", "\"e3\"", "third.bin");
    requests.emplace_back(12, 13, 0, 99, 206, SMP_END_COMPLETED, "Wget/1.21", "\"e4\"", "fourth.bin");
    for (size_t i = 0; i < requests.size(); ++i) {
        tracker.add(requests[i].record, 100 + i);
        if (i == 4) tracker.each_changed([](const LogicalDownload&) {});
    }
}

}  // namespace

TEST_CASE("a snapshot loaded into a new tracker continues exactly as the original") {
    DownloadTracker original(kWindow, kVariedCap);
    std::vector<Request> requests;
    fill_varied(original, requests);
    REQUIRE(original.open_downloads() == 4);
    REQUIRE(original.finished_downloads() == 2);
    REQUIRE(original.finished_early() == 1);
    const std::string snapshot = snapshot_of(original);

    DownloadTracker copy(kWindow, kVariedCap);
    REQUIRE(copy.load(snapshot));
    CHECK(copy.ids_by_activity() == original.ids_by_activity());
    CHECK(copy.open_downloads() == original.open_downloads());
    CHECK(copy.finished_downloads() == original.finished_downloads());
    CHECK(copy.finished_early() == original.finished_early());
    CHECK(snapshot_of(copy) == snapshot);
    // Every loaded download counts as changed, once, in the order of activity.
    const std::vector<std::string> changed = changed_described(copy);
    CHECK(changed.size() == 4);
    CHECK(changed_described(copy).empty());
    changed_described(original);  // the original hands out its own changed ones

    // The same records and ticks from here give the same downloads.
    std::vector<Request> more;
    more.reserve(5);
    more.emplace_back(14, 15, 100, 199, 206, SMP_END_COMPLETED, "Wget/1.21", "\"e3\"", "third.bin");
    more.emplace_back(16, 17, 5000, 9999, 206, SMP_END_TIMEOUT, nullptr, "\"e2\"", "other.bin");
    more.back().record.forwarded_ip = "203.0.113.9";
    more.emplace_back(18, 19, 0, 9, 206, SMP_END_COMPLETED, "new-agent");  // at the cap: curl's second ends early
    more.emplace_back(20, 21, 0, 9, 206, SMP_END_COMPLETED, "Wget/1.21", "\"e4\"", "fourth.bin");
    more.emplace_back(kWindow / kSecond + 30, kWindow / kSecond + 31, 10, 19, 206, SMP_END_COMPLETED, "Wget/1.21",
                      "\"e4\"", "fourth.bin");  // past the idle window: a new download
    for (size_t i = 0; i < more.size(); ++i) {
        const LogicalDownload* in_original = original.add(more[i].record, 200 + i);
        const LogicalDownload* in_copy = copy.add(more[i].record, 200 + i);
        REQUIRE(in_original != nullptr);
        REQUIRE(in_copy != nullptr);
        CHECK(describe(*in_copy) == describe(*in_original));
        CHECK(copy.ids_by_activity() == original.ids_by_activity());
    }
    CHECK(changed_described(copy) == changed_described(original));
    CHECK(snapshot_of(copy) == snapshot_of(original));
    for (const int64_t now_us : {int64_t{22} * kSecond, kWindow + 20 * kSecond, INT64_MAX / 2}) {
        const std::vector<std::string> finished = expire_described(original, now_us);
        CHECK(expire_described(copy, now_us) == finished);
    }
    CHECK(copy.open_downloads() == 0);
    CHECK(copy.finished_early() == original.finished_early());
}

TEST_CASE("a snapshot replaces what the tracker held") {
    DownloadTracker tracker(kWindow);
    Client a("a", 0);
    tracker.add(a.request.record, 1);
    DownloadTracker empty(kWindow);
    REQUIRE(tracker.load(snapshot_of(empty)));
    CHECK(tracker.open_downloads() == 0);
    CHECK(tracker.ids_by_activity().empty());
    CHECK(changed_described(tracker).empty());
}

namespace {

// A tracker after load(): empty when it said false, else whole: its lists,
// its table and its strings agree, whatever the bytes were.
void check_consistent(DownloadTracker& tracker, bool loaded) {
    if (!loaded) {
        CHECK(tracker.open_downloads() == 0);
        CHECK(tracker.finished_downloads() == 0);
        CHECK(tracker.ids_by_activity().empty());
        CHECK(changed_described(tracker).empty());
        return;
    }
    const size_t open = tracker.open_downloads();
    const size_t finished = tracker.finished_downloads();
    CHECK(tracker.ids_by_activity().size() == open);
    // Saved again, it loads again, the same.
    const std::string again = snapshot_of(tracker);
    DownloadTracker reloaded(kWindow);
    CHECK(reloaded.load(again));
    CHECK(snapshot_of(reloaded) == again);
    // Each open download is found by its key: a request for it joins it.
    struct Known {
        uint64_t id;
        std::string path, etag, client, agent;
        int64_t last_us;
    };
    std::vector<Known> known;
    tracker.each_changed([&](const LogicalDownload& d) {
        known.push_back({d.id, std::string(d.path), std::string(d.etag), std::string(d.client_ip),
                         std::string(d.user_agent), d.last_us});
    });
    CHECK(known.size() == open);
    for (const Known& download : known) {
        Request joining(0, 0, 0, 0);
        joining.record.path = download.path.c_str();
        joining.record.etag = download.etag.c_str();
        joining.record.client_ip = download.client.c_str();
        joining.record.user_agent = download.agent.c_str();
        joining.record.start_us = joining.record.end_us = download.last_us;
        const LogicalDownload* joined = tracker.add(joining.record, 0);
        REQUIRE(joined != nullptr);
        CHECK(joined->id == download.id);
    }
    CHECK(tracker.open_downloads() == open);
    CHECK(expire_described(tracker, INT64_MAX).size() == open + finished);
    CHECK(tracker.open_downloads() == 0);
}

}  // namespace

TEST_CASE("a truncated or corrupted snapshot is refused whole, never read out of bounds") {
    DownloadTracker original(kWindow, kVariedCap);
    std::vector<Request> requests;
    fill_varied(original, requests);
    const std::string snapshot = snapshot_of(original);
    for (size_t length = 0; length < snapshot.size(); ++length) {
        // A copy of just the prefix, so that a read past it is a read past
        // the allocation (AddressSanitizer's build reports it).
        const std::string prefix = snapshot.substr(0, length);
        DownloadTracker tracker(kWindow);
        INFO("prefix of ", length, " bytes");
        const bool loaded = tracker.load(prefix);
        CHECK_FALSE(loaded);
        check_consistent(tracker, loaded);
    }
    size_t refused = 0;
    for (size_t at = 0; at < snapshot.size(); ++at) {
        for (const unsigned char flip : {0x01, 0x80, 0xff}) {
            std::string corrupted = snapshot;
            corrupted[at] = static_cast<char>(static_cast<unsigned char>(corrupted[at]) ^ flip);
            DownloadTracker tracker(kWindow);
            INFO("byte ", at, " flipped by ", int{flip});
            const bool loaded = tracker.load(corrupted);
            refused += loaded ? 0 : 1;
            check_consistent(tracker, loaded);
        }
    }
    CHECK(refused > 0);
    std::string longer = snapshot + '\0';
    DownloadTracker tracker(kWindow);
    CHECK_FALSE(tracker.load(longer));
    CHECK(tracker.load(snapshot));
}

TEST_CASE("random requests, ticks and snapshots keep every download once, under its key") {
    // Few keys, a short window and a small cap: downloads open, join, end
    // idle, end early and move around the dense node store all the time.
    const int64_t window = 20 * kSecond;
    constexpr size_t kCap = 12;
    const std::vector<std::string> paths{"a.bin", "b.bin", "c.bin", "d.bin"};
    const std::vector<std::string> agents{"aria2/1.36", "curl/8.0", "", "Wget/1.21", "x"};
    const std::vector<std::string> clients{"192.0.2.1", "192.0.2.2", "2001:db8::1"};
    std::mt19937 random(5);
    auto tracker = std::make_unique<DownloadTracker>(window, kCap);
    std::set<uint64_t> opened, handed_out;
    const auto finished = [&](const LogicalDownload& d) {
        CHECK(handed_out.insert(d.id).second);
        CHECK(opened.count(d.id) == 1);
    };
    int64_t now_s = 0;
    for (uint64_t step = 1; step <= 5000; ++step) {
        now_s += random() % 3;
        const std::string& path = paths[random() % paths.size()];
        const std::string& agent = agents[random() % agents.size()];
        const std::string& client = clients[random() % clients.size()];
        const uint64_t first = random() % 1000;
        Request request(now_s, now_s + static_cast<int64_t>(random() % 3), first, first + random() % 100,
                        random() % 4 == 0 ? 200 : 206, SMP_END_COMPLETED, agent.c_str(), "\"e\"", path.c_str());
        request.record.file_size = 1100;
        request.record.client_ip = client.c_str();
        const LogicalDownload* download = tracker->add(request.record, step);
        REQUIRE(download != nullptr);
        CHECK(download->path.view() == path);
        CHECK(download->user_agent.view() == agent);
        CHECK(download->client_ip.view() == client);
        if (download->id == step) opened.insert(step);
        if (random() % 10 == 0) tracker->expire(now_s * kSecond, finished);
        if (random() % 7 == 0) tracker->each_changed([](const LogicalDownload&) {});
        const std::vector<uint64_t> ids = tracker->ids_by_activity();
        REQUIRE(ids.size() == tracker->open_downloads());
        CHECK(tracker->open_downloads() <= kCap);
        CHECK(std::set<uint64_t>(ids.begin(), ids.end()).size() == ids.size());
        if (step % 500 == 0) {
            // Go on with a tracker loaded from a snapshot of this one.
            const std::string snapshot = snapshot_of(*tracker);
            auto loaded = std::make_unique<DownloadTracker>(window, kCap);
            REQUIRE(loaded->load(snapshot));
            CHECK(loaded->ids_by_activity() == ids);
            CHECK(snapshot_of(*loaded) == snapshot);
            tracker = std::move(loaded);
        }
    }
    tracker->expire(INT64_MAX, finished);
    CHECK(handed_out == opened);
    CHECK(tracker->finished_early() > 0);
}

// ---- memory and the cost of a tick ----

namespace {

// Bytes the process has allocated and not freed: malloc's count (the chunks
// it handed out, its own overhead included), or AddressSanitizer's when it
// replaces malloc.
int64_t heap_in_use() {
#if defined(__SANITIZE_ADDRESS__)
    return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes());
#else
    const struct mallinfo2 info = mallinfo2();
    return static_cast<int64_t>(info.uordblks + info.hblkhd);
#endif
}

int64_t resident_bytes() {
    std::ifstream statm("/proc/self/statm");
    int64_t pages = 0;
    int64_t resident = 0;
    statm >> pages >> resident;
    return resident * sysconf(_SC_PAGESIZE);
}

// Under the sanitizers (scripts/test.sh) time is not what it is in a
// release build: only the results and the memory are checked.
bool sanitized() {
    const char* value = std::getenv("SMP_SANITIZED");
    return value != nullptr && std::string_view(value) == "1";
}

// The time this thread ran: the work measured, not the other processes of a
// shared machine (builds run beside the tests), which wall time would count.
class CpuStopwatch {
   public:
    CpuStopwatch() : start_(now()) {}
    double milliseconds() const { return (now() - start_) * 1e3; }

   private:
    static double now() {
        timespec time{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time);
        return static_cast<double>(time.tv_sec) + static_cast<double>(time.tv_nsec) / 1e9;
    }
    double start_;
};

// Texts of realistic lengths: 40-byte paths, 20-byte ETags, 100-byte user agents.
struct Corpus {
    std::vector<std::string> paths, etags, agents;

    Corpus(size_t files, size_t agent_count) {
        for (size_t i = 0; i < files; ++i) {
            char path[64];
            std::snprintf(path, sizeof path, "releases/2026/images/disk-image-%04zu.iso", i);
            char etag[64];
            std::snprintf(etag, sizeof etag, "\"%010zu-5f3a2b4\"", i);
            paths.emplace_back(path);
            etags.emplace_back(etag);
            REQUIRE(paths.back().size() == 40);
            REQUIRE(etags.back().size() == 20);
        }
        for (size_t i = 0; i < agent_count; ++i) {
            std::string agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/" +
                                std::to_string(100 + i) + ".0.0.0 Safari/537.36";
            agent.resize(100, ' ');
            agents.push_back(std::move(agent));
        }
    }
};

// One request of client 10.x.y.z (`client` numbers them) for file `file` of
// the corpus with agent `agent`. Nothing is allocated: the record points
// into the corpus and into this object.
struct CorpusRequest {
    char client_ip[16];
    smp_interval sent;
    smp_record record{};

    CorpusRequest(const Corpus& corpus, size_t file, size_t agent, uint32_t client, int64_t start_us, uint64_t first,
                  uint64_t last)
        : sent{first, last} {
        std::snprintf(client_ip, sizeof client_ip, "10.%u.%u.%u", (client >> 16) & 255, (client >> 8) & 255,
                      client & 255);
        record.size = sizeof record;
        record.method = "GET";
        record.status = 206;
        record.node = "node-1";
        record.path = corpus.paths[file].c_str();
        record.etag = corpus.etags[file].c_str();
        record.user_agent = corpus.agents[agent].c_str();
        record.client_ip = client_ip;
        record.file_size = 1 << 30;
        record.start_us = start_us;
        record.end_us = start_us + 1000;
        record.reason = SMP_END_COMPLETED;
        record.intervals = &sent;
        record.interval_count = 1;
    }
};

}  // namespace

TEST_CASE("an open download costs at most 256 bytes when its strings are shared, and gives them back") {
    // 1000 files by 100 agents from one address: every string is shared.
    const Corpus corpus(1000, 100);
    constexpr size_t kDownloads = 100'000;
    DownloadTracker tracker(kWindow);
    const int64_t before = heap_in_use();
    for (uint32_t i = 0; i < kDownloads; ++i) {
        const CorpusRequest request(corpus, i % 1000, i / 1000, 1, kSecond + i, 0, 999'999);
        tracker.add(request.record, i + 1);
    }
    REQUIRE(tracker.open_downloads() == kDownloads);
    const double per_download = static_cast<double>(heap_in_use() - before) / kDownloads;
    MESSAGE("heap bytes per open download, strings shared: ", per_download);
    CHECK(per_download <= 256);
    // Once they ended, what stays is a spare chunk of nodes and the smallest tables.
    tracker.expire(INT64_MAX, [](const LogicalDownload&) {});
    CHECK(heap_in_use() - before < 1024 * 1024);
}

TEST_CASE("a million open downloads") {
    // 1000 files by 100 agents, each download from its own address.
    const Corpus corpus(1000, 100);
    constexpr uint32_t kOpen = 1'000'000;
    constexpr uint32_t kChanged = 10'000;
    constexpr int64_t kStart = 1'800'000'000 * kSecond;
    const auto request_of = [&](uint32_t download, int64_t start_us, uint64_t first, uint64_t last) {
        return CorpusRequest(corpus, download % 1000, download / 1000 % 100, download, start_us, first, last);
    };
    auto tracker = std::make_unique<DownloadTracker>(kWindow);
    const int64_t heap_before = heap_in_use();
    const int64_t resident_before = resident_bytes();
    const CpuStopwatch opening;
    for (uint32_t i = 0; i < kOpen; ++i) tracker->add(request_of(i, kStart + i, 0, 999'999).record, i + 1);
    const double opening_ms = opening.milliseconds();
    REQUIRE(tracker->open_downloads() == kOpen);
    const double per_download = static_cast<double>(heap_in_use() - heap_before) / kOpen;
    const double resident_growth_mb = static_cast<double>(resident_bytes() - resident_before) / 1e6;
    MESSAGE("1M open downloads: ", per_download, " heap bytes each (their own client address included), RSS +",
            resident_growth_mb, " MB, opened in ", opening_ms, " ms of CPU");
    CHECK(per_download <= 256);
    CHECK(resident_growth_mb <= 400);

    size_t changed = 0;
    tracker->each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(changed == kOpen);

    // A tick after a second in which 10,000 of them grew: the idle scan
    // looks at one download, the changed ones are handed out, no other.
    for (uint32_t i = 0; i < kChanged; ++i)
        tracker->add(request_of(i * 100, kStart + kOpen + i, 1'000'000, 1'999'999).record, kOpen + 1 + i);
    const int64_t now_us = kStart + kOpen + kChanged + kSecond;
    uint64_t distinct = 0;
    const auto sum_distinct = [&](const LogicalDownload& d) { distinct += d.distinct_bytes(); };
    uint64_t visited = tracker->visited();
    const CpuStopwatch busy_tick;
    tracker->expire(now_us, sum_distinct);
    tracker->each_changed(sum_distinct);
    const double busy_tick_ms = busy_tick.milliseconds();
    CHECK(tracker->visited() - visited == kChanged + 1);
    CHECK(distinct == uint64_t{kChanged} * 2'000'000);
    // A tick with nothing changed: the best of ten, as the machine is shared.
    double quiet_tick_ms = 1e9;
    for (int round = 0; round < 10; ++round) {
        visited = tracker->visited();
        const CpuStopwatch quiet_tick;
        tracker->expire(now_us, sum_distinct);
        tracker->each_changed(sum_distinct);
        quiet_tick_ms = std::min(quiet_tick_ms, quiet_tick.milliseconds());
        CHECK(tracker->visited() - visited == 1);
    }
    MESSAGE("tick with ", kChanged, " changed: ", busy_tick_ms, " ms of CPU; with none: ", quiet_tick_ms, " ms");

    // The snapshot of them all, loaded into another tracker, gives the same order.
    std::string snapshot;
    const CpuStopwatch saving;
    tracker->save(snapshot);
    const double save_ms = saving.milliseconds();
    const std::vector<uint64_t> ids = tracker->ids_by_activity();
    tracker.reset();
    DownloadTracker loaded(kWindow);
    const CpuStopwatch loading;
    REQUIRE(loaded.load(snapshot));
    const double load_ms = loading.milliseconds();
    MESSAGE("snapshot of 1M: ", snapshot.size() / 1e6, " MB, saved in ", save_ms, " ms of CPU, loaded in ", load_ms,
            " ms");
    CHECK(loaded.open_downloads() == kOpen);
    CHECK(loaded.ids_by_activity() == ids);
    changed = 0;
    loaded.each_changed([&](const LogicalDownload&) { ++changed; });
    CHECK(changed == kOpen);

    if (!sanitized()) {
        CHECK(busy_tick_ms <= 20);
        CHECK(quiet_tick_ms <= 1);
        // A bound against a change of order (a copy per download, a quadratic
        // step), not a benchmark: about 0.3 s alone, 1.6 s seen on a machine
        // busy with other tests (the 133 MB buffer's page faults).
        CHECK(save_ms < 4000);
    }
}

TEST_CASE("finish_all ends every download, however late its last activity") {
    // The stop's last tick: the time of a record may be anything a module
    // said, and expire() at the end of time finished nothing (idle_until
    // saturates), so a graceful stop stored every download as still open.
    DownloadTracker tracker(kWindow);
    Request late(1, 1, 0, 99, 200, SMP_END_COMPLETED);
    late.record.start_us = INT64_MAX - 10;
    late.record.end_us = INT64_MAX - 5;
    add(tracker, late.record);
    Request early(2, 1, 0, 99, 206, SMP_END_CLIENT_CLOSED, "other-agent");
    add(tracker, early.record);
    CHECK(finish_all(tracker).size() == 2);
    CHECK(tracker.open_downloads() == 0);
}

TEST_CASE("the place a worker sent stays with its download, through a snapshot; a version 1 snapshot still loads") {
    DownloadTracker tracker(kWindow);
    Request first(1, 2, 0, 99);
    first.record.client_ip = "203.0.0.0";
    const std::string place =
        "FR\x1fParis\x1f\x1f"
        "64500";
    REQUIRE(tracker.add(first.record, 1, place.c_str()) != nullptr);
    Request second(3, 4, 100, 199);
    second.record.client_ip = "203.0.0.0";
    const LogicalDownload* download = tracker.add(second.record, 2, nullptr);
    REQUIRE(download != nullptr);
    CHECK(download->requests == 2);
    CHECK(download->geo.view() == place);

    const std::string snapshot = snapshot_of(tracker);
    DownloadTracker copy(kWindow);
    REQUIRE(copy.load(snapshot));
    const LogicalDownload* loaded = copy.open_download_of(second.record);
    REQUIRE(loaded != nullptr);
    CHECK(loaded->geo.view() == place);

    // Version 1, as the build before wrote it: no place after the etag.
    DownloadTracker plain(kWindow);
    REQUIRE(plain.add(second.record, 3) != nullptr);
    std::string old = snapshot_of(plain);
    const uint32_t one = 1;
    std::memcpy(old.data() + 4, &one, sizeof one);
    size_t at = 4 + 4 + 8;  // magic, version, finished_early
    uint32_t texts = 0;
    std::memcpy(&texts, old.data() + at, sizeof texts);
    at += 4;
    for (uint32_t i = 0; i < texts; ++i) {
        uint32_t length = 0;
        std::memcpy(&length, old.data() + at, sizeof length);
        at += 4 + length;
    }
    at += 4;                      // the count of open downloads
    at += 5 * 8 + 2 * 4 + 5 * 4;  // a download up to its etag
    old.erase(at, 4);             // its place
    DownloadTracker upgraded(kWindow);
    REQUIRE(upgraded.load(old));
    const LogicalDownload* restored = upgraded.open_download_of(second.record);
    REQUIRE(restored != nullptr);
    CHECK(restored->geo.empty());
    CHECK(restored->requests == 1);
    old.erase(old.size() - 1);
    CHECK_FALSE(DownloadTracker(kWindow).load(old));
}
