#include "record_codec.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

using smp::DecodedRecord;
using smp::RecordKind;

namespace {

smp_record sample(const smp_interval* intervals, size_t count) {
    smp_record r{};
    r.size = sizeof r;
    r.connection_id = 42;
    r.request_id = 3;
    r.worker_id = 2;
    r.module = "http_download";
    r.node = "node-a";
    r.start_us = 1'700'000'000'000'000;
    r.end_us = 1'700'000'001'500'000;
    r.client_ip = "2001:db8::1";
    r.client_port = 51234;
    r.method = "GET";
    r.path = "big.bin";
    r.target = "/big.bin?x=1";
    r.protocol = "HTTP/1.1";
    r.user_agent = "aria2/1.36.0";
    r.range = "bytes=0-99,200-299";
    r.etag = "\"1400000-18eb\"";
    r.file_size = 20 * 1024 * 1024;
    r.status = 206;
    r.intervals = intervals;
    r.interval_count = count;
    r.header_bytes = 250;
    r.body_bytes = 400;
    r.reason = SMP_END_CLIENT_CLOSED;
    r.received_bytes = 180;
    return r;
}

bool same_text(const char* a, const char* b) { return (a == nullptr) == (b == nullptr) && (!a || !std::strcmp(a, b)); }

}  // namespace

TEST_CASE("a record survives the wire field by field") {
    const smp_interval intervals[] = {{0, 99}, {200, 299}};
    const smp_record in = sample(intervals, 2);
    std::string wire;
    smp::append_record(in, RecordKind::close, 1234, wire);
    auto decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    const DecodedRecord copy = *decoded;        // the copy must point at its own storage
    DecodedRecord moved = std::move(*decoded);  // so must a moved-to record
    decoded.reset();
    CHECK(std::strcmp(moved.record().method, "GET") == 0);
    CHECK(std::strcmp(moved.record().etag, in.etag) == 0);
    const smp_record& out = copy.record();
    CHECK(copy.kind == RecordKind::close);
    CHECK(copy.pid == 1234);
    CHECK(out.connection_id == 42);
    CHECK(out.request_id == 3);
    CHECK(out.worker_id == 2);
    CHECK(out.start_us == in.start_us);
    CHECK(out.end_us == in.end_us);
    CHECK(out.client_port == 51234);
    CHECK(out.file_size == in.file_size);
    CHECK(out.status == 206);
    CHECK(out.header_bytes == 250);
    CHECK(out.body_bytes == 400);
    CHECK(out.received_bytes == 180);
    CHECK(out.reason == SMP_END_CLIENT_CLOSED);
    for (auto [a, b] : {std::pair{in.module, out.module},
                        {in.node, out.node},
                        {in.client_ip, out.client_ip},
                        {in.forwarded_ip, out.forwarded_ip},
                        {in.method, out.method},
                        {in.path, out.path},
                        {in.target, out.target},
                        {in.protocol, out.protocol},
                        {in.user_agent, out.user_agent},
                        {in.referer, out.referer},
                        {in.range, out.range},
                        {in.etag, out.etag}})
        CHECK(same_text(a, b));
    CHECK(out.referer == nullptr);
    REQUIRE(out.interval_count == 2);
    CHECK(out.intervals[1].first == 200);
    CHECK(out.intervals[1].last == 299);
}

TEST_CASE("truncated, corrupted or foreign datagrams are refused") {
    const smp_interval intervals[] = {{0, 99}};
    std::string framed;
    smp::append_record(sample(intervals, 1), RecordKind::transfer, 1, framed);
    const std::string wire = framed.substr(4);
    REQUIRE(DecodedRecord::decode(wire));
    for (size_t cut = 0; cut < wire.size(); cut += 7) CHECK_FALSE(DecodedRecord::decode(wire.substr(0, cut)));
    CHECK_FALSE(DecodedRecord::decode(wire + "x"));
    std::string foreign = wire;
    foreign[0] ^= 0x55;
    CHECK_FALSE(DecodedRecord::decode(foreign));
    CHECK_FALSE(DecodedRecord::decode("garbage"));
    // A reason that smp_end_reason does not name: the byte after the pid,
    // ids, times, sizes, worker id, status, interval count and port.
    std::string unknown_reason = wire;
    const size_t reason_at = 4 + 4 + 8 * 7 + 4 + 4 + 4 + 2;
    REQUIRE(static_cast<uint8_t>(unknown_reason[reason_at]) == SMP_END_CLIENT_CLOSED);
    unknown_reason[reason_at] = static_cast<char>(smp::kLastEndReason + 1);
    CHECK_FALSE(DecodedRecord::decode(unknown_reason));
    unknown_reason[reason_at] = static_cast<char>(smp::kLastEndReason);
    CHECK(DecodedRecord::decode(unknown_reason));
}

TEST_CASE("a long string is cut, the datagram stays bounded") {
    const std::string agent(100'000, 'a');
    smp_record r = sample(nullptr, 0);
    r.user_agent = agent.c_str();
    std::string wire;
    smp::append_record(r, RecordKind::close, 1, wire);
    CHECK(wire.size() <= smp::kMaxRecordBytes + 4);
    auto decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    CHECK(std::strlen(decoded->record().user_agent) == 4096);
}

TEST_CASE("long strings and many intervals together still fit kMaxRecordBytes") {
    // Twelve strings of 4096 bytes are more than a record holds: the later
    // strings are cut further, and the intervals that do not fit are left out.
    const std::string long_text(6000, 'x');
    const std::vector<smp_interval> intervals(5000, smp_interval{0, 9});
    smp_record r = sample(intervals.data(), intervals.size());
    for (const char** field : {&r.module, &r.node, &r.client_ip, &r.forwarded_ip, &r.method, &r.path, &r.target,
                               &r.protocol, &r.user_agent, &r.referer, &r.range, &r.etag})
        *field = long_text.c_str();
    std::string wire;
    smp::append_record(r, RecordKind::close, 1, wire);
    CHECK(wire.size() <= smp::kMaxRecordBytes + 4);
    auto decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    CHECK(std::strlen(decoded->record().module) == 4096);
    CHECK(std::strlen(decoded->record().etag) == 0);
    CHECK(decoded->record().interval_count == 0);

    smp_record few_strings = sample(intervals.data(), intervals.size());
    wire.clear();
    smp::append_record(few_strings, RecordKind::close, 1, wire);
    CHECK(wire.size() <= smp::kMaxRecordBytes + 4);
    decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    CHECK(decoded->record().interval_count > 1900);
    CHECK(decoded->record().interval_count < 5000);
}

TEST_CASE("a batch carries several records in order, and stops at damage") {
    const smp_interval intervals[] = {{0, 9}};
    std::string batch;
    for (uint64_t id = 1; id <= 3; ++id) {
        smp_record r = sample(intervals, 1);
        r.request_id = id;
        smp::append_record(r, RecordKind::close, 7, batch);
    }
    std::vector<uint64_t> seen;
    CHECK(DecodedRecord::for_each(batch, [&](DecodedRecord&& d) { seen.push_back(d.record().request_id); }));
    CHECK(seen == std::vector<uint64_t>{1, 2, 3});
    seen.clear();
    CHECK_FALSE(DecodedRecord::for_each(std::string_view(batch).substr(0, batch.size() - 1),
                                        [&](DecodedRecord&& d) { seen.push_back(d.record().request_id); }));
    CHECK(seen == std::vector<uint64_t>{1, 2});
}

TEST_CASE("a module built before ABI 1.4 records no received bytes") {
    // Its record ends before received_bytes: the core must not read past it.
    smp_record r = sample(nullptr, 0);
    r.size = offsetof(smp_record, received_bytes);
    r.received_bytes = 999;  // what lies past the module's struct: not its
    std::string wire;
    smp::append_record(r, RecordKind::close, 1, wire);
    auto decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    CHECK(decoded->record().received_bytes == 0);
    CHECK(decoded->record().body_bytes == 400);
}

// An encoding of `record` in an older layout: the same, with the fixed
// part's trailing fields cut to `fixed` bytes, under `magic`.
std::string older_layout(const smp_record& record, uint32_t magic, size_t fixed) {
    std::string framed;
    smp::append_record(record, RecordKind::close, 1234, framed);
    std::string old = framed.substr(4);
    std::memcpy(old.data(), &magic, sizeof magic);
    constexpr size_t kFixedNow = 136;  // SMR5 and SMR6
    old.erase(fixed, kFixedNow - fixed);
    return old;
}

TEST_CASE("records of the layouts before log places (SMR3) and received_bytes (SMR2), in an old spool, still decode") {
    const smp_interval intervals[] = {{0, 99}, {200, 299}};
    smp_record record = sample(intervals, 2);
    record.log_number = 4096;
    record.log_index = 7;  // no tls_version: an older layout has no room for it
    // SMR3: 112 bytes of fixed part, ending with received_bytes; SMR2: 104.
    for (const auto& [magic, fixed, received] :
         {std::tuple{0x534d5233u, size_t{112}, uint64_t{180}}, std::tuple{0x534d5232u, size_t{104}, uint64_t{0}}}) {
        CAPTURE(fixed);
        const std::string old = older_layout(record, magic, fixed);
        auto decoded = DecodedRecord::decode(old);
        REQUIRE(decoded);
        const smp_record& out = decoded->record();
        CHECK(out.received_bytes == received);
        CHECK(out.log_number == 0);
        CHECK(out.log_index == 0);
        CHECK(out.tls_version == nullptr);
        CHECK(out.body_bytes == 400);
        CHECK(out.status == 206);
        REQUIRE(out.interval_count == 2);
        CHECK(out.intervals[1].last == 299);
        CHECK(std::strcmp(out.etag, "\"1400000-18eb\"") == 0);
        CHECK_FALSE(DecodedRecord::decode(old.substr(0, old.size() - 1)));
    }
    // SMR4: 128 bytes, the log place kept, no tls_version.
    const std::string smr4 = older_layout(record, 0x534d5234u, 128);
    auto smr4_decoded = DecodedRecord::decode(smr4);
    REQUIRE(smr4_decoded);
    CHECK(smr4_decoded->record().log_number == 4096);
    CHECK(smr4_decoded->record().log_index == 7);
    CHECK(smr4_decoded->record().received_bytes == 180);
    CHECK(smr4_decoded->record().tls_version == nullptr);
    CHECK(std::strcmp(smr4_decoded->record().etag, "\"1400000-18eb\"") == 0);
    CHECK_FALSE(DecodedRecord::decode(smr4.substr(0, smr4.size() - 1)));
    // And SMR5 keeps the record's place in its log.
    std::string framed;
    smp::append_record(record, RecordKind::close, 1234, framed);
    auto decoded = DecodedRecord::decode(std::string_view(framed).substr(4));
    REQUIRE(decoded);
    CHECK(decoded->record().log_number == 4096);
    CHECK(decoded->record().log_index == 7);
}

TEST_CASE("a view reads the record in place; own() copies it out") {
    const smp_interval intervals[] = {{0, 99}};
    std::string framed;
    smp::append_record(sample(intervals, 1), RecordKind::close, 1, framed);
    alignas(8) char bytes[4096];
    const std::string_view encoding = std::string_view(framed).substr(4);
    std::memcpy(bytes, encoding.data(), encoding.size());
    auto viewed = DecodedRecord::view(std::string_view(bytes, encoding.size()));
    REQUIRE(viewed);
    CHECK(viewed->record().etag >= bytes);
    CHECK(viewed->record().etag < bytes + encoding.size());
    CHECK_FALSE(DecodedRecord::view(std::string_view(bytes + 1, encoding.size() - 1)));  // misaligned, short
    viewed->set_reason(SMP_END_WORKER_LOST);
    viewed->own();
    std::memset(bytes, 0, sizeof bytes);
    CHECK(std::strcmp(viewed->record().etag, "\"1400000-18eb\"") == 0);
    CHECK(viewed->record().reason == SMP_END_WORKER_LOST);
}

TEST_CASE("SMR5 carries tls_version, and NULL over plain TCP") {
    const smp_interval intervals[] = {{0, 99}};
    for (const char* version : {"TLSv1.3", "TLSv1.2", static_cast<const char*>(nullptr)}) {
        CAPTURE(version);
        smp_record in = sample(intervals, 1);
        in.tls_version = version;
        std::string framed;
        smp::append_record(in, RecordKind::close, 1, framed);
        auto decoded = DecodedRecord::decode(std::string_view(framed).substr(4));
        REQUIRE(decoded);
        CHECK(same_text(decoded->record().tls_version, version));
        CHECK(same_text(smp_record_tls_version(&decoded->record()), version));
        CHECK(std::strcmp(decoded->record().etag, in.etag) == 0);
        const DecodedRecord copy = *decoded;
        decoded.reset();
        CHECK(same_text(copy.record().tls_version, version));
    }
}

TEST_CASE("long strings do not cut tls_version, and a module before ABI 1.9 has none") {
    const std::string long_text(6000, 'x');
    smp_record r = sample(nullptr, 0);
    for (const char** field : {&r.module, &r.node, &r.client_ip, &r.forwarded_ip, &r.method, &r.path, &r.target,
                               &r.protocol, &r.user_agent, &r.referer, &r.range, &r.etag})
        *field = long_text.c_str();
    r.tls_version = "TLSv1.3";
    std::string wire;
    smp::append_record(r, RecordKind::close, 1, wire);
    CHECK(wire.size() <= smp::kMaxRecordBytes + 4);
    auto decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    CHECK(same_text(decoded->record().tls_version, "TLSv1.3"));

    smp_record before = sample(nullptr, 0);
    before.size = offsetof(smp_record, tls_version);
    before.tls_version = "TLSv1.3";  // what lies past the module's struct: not its
    CHECK(smp_record_tls_version(&before) == nullptr);
    wire.clear();
    smp::append_record(before, RecordKind::close, 1, wire);
    decoded = DecodedRecord::decode(std::string_view(wire).substr(4));
    REQUIRE(decoded);
    CHECK(decoded->record().tls_version == nullptr);
}

TEST_CASE("SMR6 carries the client's place with the shortened address; SMR5 has none") {
    const smp_interval intervals[] = {{0, 99}};
    const smp_record record = sample(intervals, 1);
    const std::string place =
        "FR\x1fParis\x1f\x1f"
        "64500";
    std::string framed;
    smp::append_record(record, RecordKind::close, 1, framed, place.c_str());
    auto decoded = DecodedRecord::decode(std::string_view(framed).substr(4));
    REQUIRE(decoded);
    REQUIRE(decoded->geo() != nullptr);
    CHECK(decoded->geo() == place);
    CHECK(same_text(decoded->record().etag, record.etag));
    // A copy keeps it.
    const DecodedRecord copy = *decoded;
    CHECK(copy.geo() == place);

    framed.clear();
    smp::append_record(record, RecordKind::close, 1, framed);
    decoded = DecodedRecord::decode(std::string_view(framed).substr(4));
    REQUIRE(decoded);
    CHECK(decoded->geo() == nullptr);
    // What an SMR5 writer left: its magic, and zero where the place's length is now.
    std::string smr5 = framed.substr(4);
    const uint32_t magic = 0x534d5235;
    std::memcpy(smr5.data(), &magic, sizeof magic);
    const uint16_t zero = 0;
    std::memcpy(smr5.data() + 130, &zero, sizeof zero);
    decoded = DecodedRecord::decode(smr5);
    REQUIRE(decoded);
    CHECK(decoded->geo() == nullptr);
    CHECK(same_text(decoded->record().etag, record.etag));
}
