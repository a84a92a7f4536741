#include "record_log.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "collector_checkpoint.hpp"

using smp::MappedLog;
using smp::RecordKind;
using smp::RecordLogDirectory;
using smp::RecordLogReader;
using smp::RecordLogWriter;

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char name[] = "/tmp/smp-log-XXXXXX";
        path = mkdtemp(name);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

// A close record for request `request`, with a path of `path_bytes` bytes.
smp_record request(uint64_t request, size_t path_bytes = 20) {
    static std::string path;
    path.assign(path_bytes, 'p');
    smp_record record{};
    record.size = sizeof record;
    record.connection_id = 1;
    record.request_id = request;
    record.method = "GET";
    record.path = path.c_str();
    record.status = 200;
    return record;
}

struct Pair {
    RecordLogWriter writer;
    RecordLogReader reader;
};

// A fresh log of the smallest size in `dir`, mapped by a writer and a reader.
Pair make_log(RecordLogDirectory& dir, uint64_t capacity = smp::kMinRecordLogBytes) {
    std::string error;
    auto created = dir.create(capacity, static_cast<uid_t>(-1), static_cast<gid_t>(-1), error);
    REQUIRE_MESSAGE(created, error);
    auto for_writer = MappedLog::map(created->fd, error);
    auto for_reader = MappedLog::map(created->fd, error);
    ::close(created->fd);
    REQUIRE(for_writer);
    REQUIRE(for_reader);
    return {RecordLogWriter(std::move(*for_writer)), RecordLogReader(std::move(*for_reader), 0, 0)};
}

// The request ids of every frame the reader has now.
std::vector<uint64_t> read_all(RecordLogReader& reader) {
    std::vector<uint64_t> ids;
    while (auto frame = reader.next()) {
        auto decoded = smp::DecodedRecord::view(frame->encoding);
        REQUIRE(decoded);
        CHECK(frame->index == reader.index());
        ids.push_back(decoded->record().request_id);
    }
    return ids;
}

}  // namespace

TEST_CASE("a record log hands the reader every record in order, read in place") {
    TempDir temp;
    RecordLogDirectory dir(temp.path);
    auto [writer, reader] = make_log(dir);
    CHECK(writer.number() == 4096);  // above the ids of the versions before
    for (uint64_t i = 1; i <= 3; ++i) CHECK(writer.append(request(i), RecordKind::close, 1));
    CHECK(read_all(reader) == std::vector<uint64_t>{1, 2, 3});
    CHECK(reader.index() == 3);
    CHECK(read_all(reader).empty());
    CHECK(writer.append(request(4), RecordKind::transfer, 1));
    auto frame = reader.next();
    REQUIRE(frame);
    CHECK(frame->kind == RecordKind::transfer);
    CHECK(frame->index == 4);
}

TEST_CASE("a record log says when a quarter of its ring is read and not released") {
    TempDir temp;
    RecordLogDirectory dir(temp.path);
    auto [writer, reader] = make_log(dir);
    uint64_t appended = 0;
    while (reader.unread() < smp::kMinRecordLogBytes / 4) {
        REQUIRE(writer.append(request(++appended, 200), RecordKind::close, 1));
        REQUIRE(appended < 100'000);
    }
    CHECK_FALSE(reader.releasable_quarter());  // written, not read: a checkpoint would give nothing back
    uint64_t read = 0;
    while (!reader.releasable_quarter()) {
        REQUIRE(reader.next());
        REQUIRE(++read <= appended);
    }
    // Said at the frame that passes a quarter of the ring read.
    const uint64_t read_bytes = reader.position() - reader.released();
    CHECK(read_bytes >= smp::kMinRecordLogBytes / 4);
    CHECK(read_bytes < smp::kMinRecordLogBytes / 4 + read_bytes / read);
    reader.release(reader.position());
    CHECK_FALSE(reader.releasable_quarter());
}

TEST_CASE("a full record log drops and counts; released space is written again, round the ring many times") {
    TempDir temp;
    RecordLogDirectory dir(temp.path);
    auto [writer, reader] = make_log(dir);
    // Records of odd sizes, so that frames land everywhere near the ring's end.
    uint64_t appended = 0;
    while (writer.append(request(appended + 1, 100 + appended % 300), RecordKind::close, 1)) ++appended;
    CHECK(writer.dropped() == 1);
    CHECK(appended > 1000);
    // A record as long as the longest that did not fit is dropped too.
    CHECK_FALSE(writer.append(request(0, 4000), RecordKind::close, 1));
    CHECK(writer.dropped() == 2);
    // Read, but not released: still full.
    CHECK(read_all(reader).size() == appended);
    CHECK_FALSE(writer.append(request(0, 4000), RecordKind::close, 1));
    // Released: ten times the ring's size goes through, in order.
    reader.release(reader.position());
    uint64_t next = appended + 1;
    uint64_t expected = next;
    for (int round = 0; round < 10 * static_cast<int>(appended); ++round) {
        REQUIRE(writer.append(request(next, 100 + next % 300), RecordKind::close, 1));
        ++next;
        if (round % 97 == 0) {
            for (uint64_t id : read_all(reader)) CHECK(id == expected++);
            reader.release(reader.position());
        }
    }
    for (uint64_t id : read_all(reader)) CHECK(id == expected++);
    CHECK(expected == next);
    CHECK(writer.dropped() == 3);
}

TEST_CASE("a log is finished once ended and read to its end; numbers are never given twice") {
    TempDir temp;
    {
        RecordLogDirectory dir(temp.path);
        auto [writer, reader] = make_log(dir);
        CHECK(writer.append(request(1), RecordKind::close, 1));
        CHECK_FALSE(reader.ended());
        CHECK(dir.end_all_left() == 1);
        CHECK(dir.end_all_left() == 0);
        CHECK(reader.ended());
        CHECK_FALSE(reader.finished());
        CHECK(read_all(reader).size() == 1);
        CHECK(reader.finished());
    }
    for (auto number : smp::list_record_logs(temp.path)) unlink(smp::record_log_path(temp.path, number).c_str());
    RecordLogDirectory again(temp.path);  // a new master, after every log was read and deleted
    auto [writer, reader] = make_log(again);
    CHECK(writer.number() == 4097);
}

TEST_CASE("a damaged record log is read up to the damage and no further") {
    TempDir temp;
    RecordLogDirectory dir(temp.path);
    auto [writer, reader] = make_log(dir);
    for (uint64_t i = 1; i <= 3; ++i) CHECK(writer.append(request(i), RecordKind::close, 1));
    // The second frame's index overwritten, as a stray write would.
    auto path = smp::record_log_path(temp.path, writer.number());
    std::string error;
    auto log = MappedLog::open(path, error);
    REQUIRE(log);
    RecordLogReader first(std::move(*log), 0, 0);
    REQUIRE(first.next());
    const uint64_t second = first.position();
    const int fd = ::open(path.c_str(), O_RDWR);
    const uint64_t bogus = 77;
    REQUIRE(pwrite(fd, &bogus, sizeof bogus, static_cast<off_t>(smp::kRecordLogHeaderBytes + second + 8)) == 8);
    ::close(fd);
    CHECK(read_all(reader) == std::vector<uint64_t>{1});
    CHECK(reader.damaged());
}

TEST_CASE("a checkpoint round-trips and a damaged one is refused; a torn journal entry is left out") {
    smp::Checkpoint checkpoint;
    checkpoint.generation = 7;
    checkpoint.clock_us = 123456;
    checkpoint.logs = {{4096, 1000, 12, false}, {4097, 64, 1, true}};
    checkpoint.downloads = "saved downloads";
    std::string wire;
    smp_record running = request(5);
    running.log_number = 4096;
    running.log_index = 11;
    smp::append_record(running, RecordKind::transfer, 1, wire);
    checkpoint.running.push_back({*smp::DecodedRecord::decode(std::string_view(wire).substr(4)), 99});
    const std::string encoded = smp::encode_checkpoint(checkpoint);
    auto decoded = smp::decode_checkpoint(encoded);
    REQUIRE(decoded);
    CHECK(decoded->generation == 7);
    CHECK(decoded->clock_us == 123456);
    REQUIRE(decoded->logs.size() == 2);
    CHECK(decoded->logs[1].done);
    CHECK(decoded->logs[0].position == 1000);
    CHECK(decoded->downloads == "saved downloads");
    REQUIRE(decoded->running.size() == 1);
    CHECK(decoded->running[0].heard_ms == 99);
    CHECK(decoded->running[0].last.record().log_index == 11);
    for (size_t cut = 0; cut < encoded.size(); ++cut) CHECK_FALSE(smp::decode_checkpoint(encoded.substr(0, cut)));
    std::string flipped = encoded;
    flipped[20] ^= 1;
    CHECK_FALSE(smp::decode_checkpoint(flipped));

    TempDir temp;
    smp::Journal journal;
    std::string error;
    REQUIRE(journal.start(temp.path, 3, error));
    journal.add({smp::JournalEntry::read, 0, 4096, 10});
    journal.add({smp::JournalEntry::tick, 0, 5000, 0});
    REQUIRE(journal.flush());
    CHECK(smp::list_journals(temp.path) == std::vector<uint64_t>{3});
    const std::string path = smp::journal_path(temp.path, 3);
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(write(fd, "torn", 4) == 4);
    ::close(fd);
    const auto entries = smp::read_journal(path);
    REQUIRE(entries.size() == 2);
    CHECK(entries[0].b == 10);
    CHECK(entries[1].kind == smp::JournalEntry::tick);
}

TEST_CASE("padding that would take the reader past the writer is damage, not an endless loop") {
    // Found by record_log_fuzz: zeros (a padding frame) where the writer says
    // 64 bytes were written sent the reader round the ring for ever.
    TempDir temp;
    RecordLogDirectory dir(temp.path);
    auto [writer, reader] = make_log(dir);
    std::string error;
    auto log = MappedLog::open(smp::record_log_path(temp.path, writer.number()), error);
    REQUIRE(log);
    log->header().written.store(64);
    CHECK_FALSE(reader.next());
    CHECK(reader.damaged());
}

TEST_CASE("a reader opened at a checkpoint's place reads what came after it") {
    // A collector restarting from its checkpoint: before, the reader believed
    // the writer was at 0 and called the first frame after the place damaged.
    TempDir temp;
    RecordLogDirectory dir(temp.path);
    auto [writer, reader] = make_log(dir);
    for (uint64_t i = 1; i <= 3; ++i) CHECK(writer.append(request(i), RecordKind::close, 1));
    REQUIRE(reader.next());
    const uint64_t position = reader.position();
    std::string error;
    auto log = MappedLog::open(smp::record_log_path(temp.path, writer.number()), error);
    REQUIRE(log);
    RecordLogReader restarted(std::move(*log), position, 1);
    CHECK(read_all(restarted) == std::vector<uint64_t>{2, 3});
    CHECK_FALSE(restarted.damaged());
    CHECK(writer.append(request(4), RecordKind::close, 1));
    CHECK(read_all(restarted) == std::vector<uint64_t>{4});
}
