#include "collector.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using smp::DecodedRecord;
using smp::InFlightRequests;
using smp::RecordKind;

namespace {

// The record of request `request` on connection `connection` in log `log`, as decoded.
DecodedRecord progress(uint64_t log, uint64_t connection, uint64_t request, RecordKind kind = RecordKind::transfer) {
    const smp_interval sent{0, 99};
    smp_record record{};
    record.size = sizeof record;
    record.connection_id = connection;
    record.request_id = request;
    record.method = "GET";
    record.path = "big.bin";
    record.status = 200;
    record.intervals = &sent;
    record.interval_count = 1;
    record.log_number = log;
    std::string wire;
    smp::append_record(record, kind, 1, wire);
    auto decoded = DecodedRecord::decode(std::string_view(wire).substr(sizeof(uint32_t)));
    REQUIRE(decoded);
    return std::move(*decoded);
}

std::vector<uint64_t> connections_of(const std::vector<DecodedRecord>& records) {
    std::vector<uint64_t> ids;
    for (const auto& r : records) ids.push_back(r.record().connection_id);
    return ids;
}

}  // namespace

TEST_CASE("a running request not heard of for too long is handed out as lost, and only that one") {
    InFlightRequests in_flight;
    in_flight.update(progress(100, 1, 1), 0);
    in_flight.update(progress(100, 2, 1), 5);
    in_flight.update(progress(200, 3, 1), 10);
    in_flight.update(progress(100, 1, 1), 20);  // connection 1 reports progress again
    std::vector<DecodedRecord> lost;
    const auto keep = [&](DecodedRecord& last) { lost.push_back(std::move(last)); };
    CHECK(in_flight.take_silent(15, keep) == 2);
    CHECK(connections_of(lost) == std::vector<uint64_t>{2, 3});
    CHECK(in_flight.size() == 1);
    CHECK(in_flight.take_silent(20, keep) == 0);  // heard at 20: not before it
    CHECK(in_flight.take_silent(21, keep) == 1);
    CHECK(in_flight.size() == 0);
}

TEST_CASE("a close record ends a running request: it is not lost later") {
    InFlightRequests in_flight;
    in_flight.update(progress(100, 1, 1), 0);
    in_flight.update(progress(100, 1, 2), 0);
    in_flight.erase(progress(100, 1, 1, RecordKind::close));
    in_flight.erase(progress(100, 9, 9, RecordKind::close));  // never reported progress: nothing to forget
    std::vector<DecodedRecord> lost;
    CHECK(in_flight.take_silent(1000, [&](DecodedRecord& last) { lost.push_back(std::move(last)); }) == 1);
    REQUIRE(lost.size() == 1);
    CHECK(lost[0].record().request_id == 2);
}

TEST_CASE("the running requests of a log whose worker died are handed out, the others' are kept") {
    InFlightRequests in_flight;
    in_flight.update(progress(100, 1, 1), 0);
    in_flight.update(progress(200, 2, 1), 1);
    in_flight.update(progress(100, 3, 1), 2);
    std::vector<DecodedRecord> lost;
    const auto keep = [&](DecodedRecord& last) { lost.push_back(std::move(last)); };
    in_flight.take_log(100, keep);
    CHECK(connections_of(lost) == std::vector<uint64_t>{1, 3});
    CHECK(in_flight.size() == 1);
    // The silence order forgot them too.
    lost.clear();
    CHECK(in_flight.take_silent(1000, keep) == 1);
    CHECK(connections_of(lost) == std::vector<uint64_t>{2});
}

TEST_CASE("a download's id is the place of the record that opened it, above the ids of the versions before") {
    CHECK(smp::download_id(4096, 12) == (uint64_t{4096} << 40 | 12));
    CHECK(smp::download_id(4096, 13) == smp::download_id(4096, 12) + 1);
    CHECK(smp::download_id(4097, 1) > smp::download_id(4096, (uint64_t{1} << 40) - 1));
    // Microseconds since 1970, the ids before, stay below 2^52 until 2112.
    CHECK(smp::download_id(4096, 1) > uint64_t{1} << 52);
    // Positive as a signed 64-bit integer (SQLite, BSON) for 2^23 - 4096 logs.
    CHECK(static_cast<int64_t>(smp::download_id((uint64_t{1} << 23) - 1, (uint64_t{1} << 40) - 1)) > 0);
}
