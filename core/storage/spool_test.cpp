#include "spool.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;
using smp::Batch;
using smp::Spool;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "smp-spool-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

// A batch with one request and one download whose fields all differ.
Batch sample(uint64_t sequence, bool with_active = true) {
    static const smp_interval sent[] = {{0, 99}, {200, 4095}};
    smp_record r{};
    r.size = sizeof r;
    r.connection_id = 7;
    r.request_id = sequence;
    r.start_us = 1'700'000'000'000'000;
    r.end_us = r.start_us + 1500;
    r.client_ip = "192.0.2.1";
    r.method = "GET";
    r.path = "a.bin";
    r.user_agent = "curl/7.88";
    r.etag = "\"abc\"";
    r.file_size = 4096;
    r.status = 206;
    r.intervals = sent;
    r.interval_count = 2;
    r.body_bytes = 3996;
    r.reason = SMP_END_CLIENT_CLOSED;
    std::string encoded;
    smp::append_record(r, smp::RecordKind::close, 1234, encoded);

    Batch batch;
    batch.origin = 1'700'000'000'000'000;
    batch.sequence = sequence;
    smp::DecodedRecord::for_each(encoded,
                                 [&](smp::DecodedRecord&& d) { batch.add(std::move(d), smp::ClientClass::tool); });
    smp::DownloadRow row;
    row.id = 99 + sequence;
    row.client_ip = "192.0.2.1";
    row.user_agent = "curl/7.88";
    row.path = "a.bin";
    row.etag = "\"abc\"";
    row.file_size = 4096;
    row.distinct_bytes = 3996;
    row.bytes_sent = 4000;
    row.requests = 2;
    row.resumes = 1;
    row.first_us = r.start_us;
    row.last_us = r.end_us;
    row.active_us = 1400;
    row.reason = SMP_END_INCOMPLETE;
    row.delivered = {{0, 99}, {200, 4095}};
    if (with_active)
        row.active = {{static_cast<uint64_t>(r.start_us), static_cast<uint64_t>(r.start_us) + 1000},
                      {static_cast<uint64_t>(r.start_us) + 1600, static_cast<uint64_t>(r.start_us) + 2000}};
    row.geo.country = "FR";
    row.geo.city = "Paris";
    row.geo.has_location = true;
    row.geo.latitude = 48.85;
    row.geo.longitude = 2.35;
    row.geo.asn = 64496;
    row.geo.organisation = "Example";
    row.client_class = smp::ClientClass::bot;
    batch.add(row);
    return batch;
}

void check_same(const Batch& got, const Batch& want) {
    CHECK(got.origin == want.origin);
    CHECK(got.sequence == want.sequence);
    REQUIRE(got.records.size() == want.records.size());
    const smp_record& a = got.records[0];
    const smp_record& b = want.records[0];
    CHECK(a.request_id == b.request_id);
    CHECK(std::string(a.user_agent) == b.user_agent);
    CHECK(a.interval_count == 2);
    CHECK(a.intervals[1].last == 4095);
    CHECK(a.log_index == b.log_index);
    REQUIRE(got.downloads.size() == 1);
    const smp_download& d = got.downloads[0];
    CHECK(d.id == want.downloads[0].id);
    CHECK(std::string(d.country) == "FR");
    CHECK(std::string(d.organisation) == "Example");
    CHECK(d.latitude == doctest::Approx(48.85));
    CHECK(d.asn == 64496);
    CHECK(d.wasted_bytes == 4);
    CHECK(d.delivered_count == 2);
    const smp_interval* spans = nullptr;
    REQUIRE(smp_download_active(&d, &spans) == want.downloads[0].active_count);
    for (size_t i = 0; i < want.downloads[0].active_count; ++i) {
        CHECK(spans[i].first == want.downloads[0].active[i].first);
        CHECK(spans[i].last == want.downloads[0].active[i].last);
    }
    CHECK(d.reason == SMP_END_INCOMPLETE);
    CHECK(d.finished == 0);
}

}  // namespace

TEST_CASE("a download from the tracker is added to a batch with its texts, the empty ones included") {
    // A record with no node and no ETag: the tracker's handles of those are
    // empty, and their views have no bytes at all.
    static const smp_interval sent[] = {{0, 4095}};
    smp_record r{};
    r.size = sizeof r;
    r.method = "GET";
    r.status = 200;
    r.path = "a.bin";
    r.client_ip = "192.0.2.9";
    r.user_agent = "curl/7.88";
    r.etag = "";
    r.file_size = 4096;
    r.start_us = 1'700'000'000'000'000;
    r.end_us = r.start_us + 10;
    r.intervals = sent;
    r.interval_count = 1;
    smp::DownloadTracker tracker(60'000'000);
    const smp::LogicalDownload* download = tracker.add(r, 42);
    REQUIRE(download != nullptr);
    Batch batch;
    smp::GeoInfo geo;
    geo.city = "Lyon";
    batch.add(*download, geo, true, smp::ClientClass::tool);
    REQUIRE(batch.downloads.size() == 1);
    const smp_download& d = batch.downloads[0];
    CHECK(d.id == 42);
    CHECK(std::string(d.node).empty());
    CHECK(std::string(d.etag).empty());
    CHECK(std::string(d.path) == "a.bin");
    CHECK(std::string(d.user_agent) == "curl/7.88");
    CHECK(d.country == nullptr);  // unknown, not empty
    CHECK(std::string(d.city) == "Lyon");
    CHECK(d.completed == 1);
    REQUIRE(d.delivered_count == 1);
    CHECK(d.delivered[0].last == 4095);
    CHECK(std::string(smp_download_client_class(&d)) == "tool");
    // And through the spool's encoding.
    auto decoded = smp::decode_batch(smp::encode_batch(batch));
    REQUIRE(decoded);
    CHECK(std::string(decoded->downloads[0].city) == "Lyon");
    CHECK(std::string(decoded->downloads[0].etag).empty());
}

TEST_CASE(
    "a view of several batches holds theirs in order, not in a forked child, and then shows one batch where it is") {
    const Batch a = sample(3), b = sample(4), c = sample(5);
    smp::BatchView view;
    const Batch* three[] = {&a, &b, &c};
    const smp_batch* merged = view.of(three);
    REQUIRE(merged->record_count == 3);
    REQUIRE(merged->download_count == 3);
    CHECK(merged->sequence == 5);  // named by the last
    for (size_t i = 0; i < 3; ++i) {
        CHECK(merged->records[i].request_id == three[i]->records[0].request_id);
        CHECK(merged->downloads[i].id == three[i]->downloads[0].id);
    }
    // The copies are not in a forked child (the checkpoint's writer): there
    // the page is not mapped at all, which msync says with ENOMEM.
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const auto page_size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
        const auto page = reinterpret_cast<uintptr_t>(merged->records) & ~(page_size - 1);
        const bool unmapped = msync(reinterpret_cast<void*>(page), page_size, MS_ASYNC) != 0 && errno == ENOMEM;
        _exit(unmapped ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // Fewer batches on the next call: only theirs, none of the room's last contents.
    const Batch* two[] = {&c, &a};
    merged = view.of(two);
    REQUIRE(merged->record_count == 2);
    CHECK(merged->records[0].request_id == 5);
    CHECK(merged->downloads[1].id == a.downloads[0].id);
    CHECK(merged->sequence == 3);
    const smp_batch* one = view.of(b);
    CHECK(one->records == b.records.data());  // not copied
    CHECK(one->record_count == 1);
    CHECK(one->downloads == b.downloads.data());
    CHECK(one->sequence == 4);
}

TEST_CASE("a view's room that grows a little at each call is mapped again only now and then") {
    std::vector<Batch> batches;
    for (uint64_t sequence = 1; sequence <= 160; ++sequence) batches.push_back(sample(sequence));
    std::vector<const Batch*> taken;
    for (const Batch& batch : batches) taken.push_back(&batch);
    smp::BatchView view;
    // A store falling behind takes 100 batches, then one more at each call.
    const smp_record* first = view.of(std::span(taken).first(100))->records;
    const smp_record* grown = view.of(std::span(taken).first(101))->records;
    CHECK(grown != first);  // a larger room
    for (size_t count = 102; count <= 150; ++count) {
        const smp_batch* merged = view.of(std::span(taken).first(count));
        CHECK(merged->records == grown);  // the same room
        REQUIRE(merged->record_count == count);
        CHECK(merged->records[count - 1].request_id == count);
        CHECK(merged->download_count == count);
    }
}

TEST_CASE("a batch survives its encoding; damage is refused") {
    const Batch batch = sample(3);
    const std::string bytes = smp::encode_batch(batch);
    auto decoded = smp::decode_batch(bytes);
    REQUIRE(decoded);
    check_same(*decoded, batch);
    CHECK_FALSE(smp::decode_batch(bytes.substr(0, bytes.size() - 1)));
    CHECK_FALSE(smp::decode_batch(bytes + "x"));
    CHECK_FALSE(smp::decode_batch(""));
}

TEST_CASE("a batch keeps its client classes through the spool; one spooled before them has none") {
    const Batch batch = sample(3);
    auto decoded = smp::decode_batch(smp::encode_batch(batch));
    REQUIRE(decoded);
    CHECK(std::string(smp_record_client_class(&decoded->records[0])) == "tool");
    const smp_download& view = decoded->downloads[0];
    CHECK(std::string(smp_download_client_class(&view)) == "bot");
    // An SMB1 batch (an earlier version's spool): the layout without the
    // class bytes; read with no class.
    std::string old = smp::encode_batch(batch);
    old.resize(old.size() - batch.records.size() - batch.downloads.size());
    old[0] = '1';  // the magic's low byte: "SMB1"
    auto earlier = smp::decode_batch(old);
    REQUIRE(earlier);
    check_same(*earlier, sample(3));
    CHECK(earlier->records[0].client_class == nullptr);
    CHECK(std::string(smp_record_client_class(&earlier->records[0])) == "unknown");
    const smp_download& earlier_view = earlier->downloads[0];
    CHECK(std::string(smp_download_client_class(&earlier_view)) == "unknown");
}

TEST_CASE("a download frame spooled before the active spans (SMD2) is read with none") {
    Batch batch = sample(3, false);
    std::string bytes = smp::encode_batch(batch);
    // SMD3 ends the frame with the count of spans (0 here); SMD2 had none.
    const size_t magic = bytes.find("3DMS");  // 0x534d4433, little-endian
    REQUIRE(magic != std::string::npos);
    uint32_t length = 0;
    std::memcpy(&length, bytes.data() + magic - sizeof length, sizeof length);
    const size_t frame_end = magic + length;
    bytes.erase(frame_end - sizeof(uint32_t), sizeof(uint32_t));
    length -= sizeof(uint32_t);
    std::memcpy(bytes.data() + magic - sizeof length, &length, sizeof length);
    bytes[magic] = '2';
    auto decoded = smp::decode_batch(bytes);
    REQUIRE(decoded);
    check_same(*decoded, batch);
    bytes[magic] = '3';  // read as SMD3, the same frame lacks its count
    CHECK_FALSE(smp::decode_batch(bytes));
}

TEST_CASE("the spool gives batches back in order, across a restart") {
    TempDir tmp;
    const std::string dir = (tmp.path / "spool").string();
    {
        Spool spool(dir);
        CHECK(spool.empty());
        CHECK(spool.front() == nullptr);
        for (uint64_t i = 1; i <= 3; ++i) spool.push(sample(i));
        CHECK(spool.batches_in_memory() == 0);
        REQUIRE(spool.front() != nullptr);
        CHECK(spool.front()->sequence == 1);
        spool.pop();
    }
    // The next run finds 2 and 3 again (1 was taken, but its segment is
    // only forgotten once read to the end: a store skips what it has).
    Spool spool(dir);
    CHECK_FALSE(spool.empty());
    spool.push(sample(4));
    std::vector<uint64_t> order;
    while (const Batch* batch = spool.front()) {
        order.push_back(batch->sequence);
        spool.pop();
    }
    CHECK(order == std::vector<uint64_t>{1, 2, 3, 4});
    CHECK(spool.empty());
    CHECK(fs::is_empty(dir));  // every segment read to its end is deleted
}

TEST_CASE("a torn last write is skipped, not replayed") {
    TempDir tmp;
    const std::string dir = (tmp.path / "spool").string();
    {
        Spool spool(dir);
        spool.push(sample(1));
        spool.push(sample(2));
    }
    const fs::path segment = *fs::directory_iterator(dir);
    fs::resize_file(segment, fs::file_size(segment) - 10);  // the second entry loses its end
    Spool spool(dir);
    REQUIRE(spool.front() != nullptr);
    CHECK(spool.front()->sequence == 1);
    spool.pop();
    CHECK(spool.front() == nullptr);
    CHECK(spool.empty());
}

TEST_CASE("a spool that cannot write keeps batches in memory, in order") {
    TempDir tmp;
    const fs::path blocker = tmp.path / "file";
    std::ofstream(blocker) << "not a directory";
    Spool spool((blocker / "spool").string());  // cannot be created
    spool.push(sample(1));
    spool.push(sample(2));
    CHECK(spool.batches_in_memory() == 2);
    REQUIRE(spool.front() != nullptr);
    CHECK(spool.front()->sequence == 1);
    spool.pop();
    REQUIRE(spool.front() != nullptr);
    CHECK(spool.front()->sequence == 2);
    spool.pop();
    CHECK(spool.empty());
}
