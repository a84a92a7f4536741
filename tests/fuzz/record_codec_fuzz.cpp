// The record codec between the workers and the collector. An input whose
// first byte is even is a datagram as the collector receives it (any bytes,
// from a worker or a spool file); one whose first byte is odd describes a
// record, which must survive append_record and decode whole. Either way what
// decodes must encode and decode to the same record.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "record_codec.hpp"
#include "require.hpp"

using smp::DecodedRecord;
using smp::RecordKind;
using smp::fuzz::require;

namespace {

constexpr size_t kMaxString = 4096;     // record_codec.cpp cuts longer strings
constexpr size_t kFewIntervals = 1000;  // with 16 KiB of strings, still within kMaxRecordBytes

// How the encoder may have cut the strings of a record.
enum class Cut {
    none,            // each string is whole
    to_max_string,   // each string is whole up to kMaxString
    to_fit_a_record  // the same, and then later strings may be shorter still
};

// `decoded` is `original` as the codec carries it: every field, and each
// string as its C string, cut as `cut` says.
bool same_record(const smp_record& original, const smp_record& decoded, Cut cut) {
    if (original.connection_id != decoded.connection_id || original.request_id != decoded.request_id ||
        original.worker_id != decoded.worker_id || original.start_us != decoded.start_us ||
        original.end_us != decoded.end_us || original.client_port != decoded.client_port ||
        original.file_size != decoded.file_size || original.status != decoded.status ||
        original.header_bytes != decoded.header_bytes || original.body_bytes != decoded.body_bytes ||
        smp_record_received_bytes(&original) != decoded.received_bytes || original.reason != decoded.reason)
        return false;
    const auto a = smp::record_strings(original);
    const auto b = smp::record_strings(decoded);
    for (size_t i = 0; i < a.size(); ++i) {
        if ((a[i] == nullptr) != (b[i] == nullptr)) return false;
        if (a[i] == nullptr) continue;
        const size_t length = cut == Cut::none ? std::strlen(a[i]) : std::min(std::strlen(a[i]), kMaxString);
        const size_t decoded_length = std::strlen(b[i]);
        if (cut == Cut::to_fit_a_record ? decoded_length > length : decoded_length != length) return false;
        if (std::memcmp(a[i], b[i], decoded_length) != 0) return false;
    }
    return true;
}

// Encodes a decoded record again: it must decode to the same record.
void check_round_trip(const DecodedRecord& decoded) {
    const smp_record& r = decoded.record();
    require(r.size == sizeof r, "a decoded record has the current size");
    for (size_t i = 0; i < r.interval_count; ++i)
        require(r.intervals[i].first <= r.intervals[i].last, "a decoded interval is not reversed");
    std::string wire;
    smp::append_record(r, decoded.kind, decoded.pid, wire);
    require(wire.size() <= sizeof(uint32_t) + smp::kMaxRecordBytes, "an encoding fits kMaxRecordBytes");
    const auto again = DecodedRecord::decode(std::string_view(wire).substr(sizeof(uint32_t)));
    require(again.has_value(), "an encoded record decodes");
    require(again->kind == decoded.kind && again->pid == decoded.pid, "kind and pid survive");
    require(same_record(r, again->record(), Cut::none), "a record survives encode(decode(x))");
    require(again->record().interval_count == r.interval_count &&
                std::equal(r.intervals, r.intervals + r.interval_count, again->record().intervals,
                           [](const smp_interval& x, const smp_interval& y) {
                               return x.first == y.first && x.last == y.last;
                           }),
            "the intervals survive");
    DecodedRecord copy;
    copy = decoded;  // a copy holds its own bytes
    require(same_record(r, copy.record(), Cut::none) && copy.kind == decoded.kind && copy.pid == decoded.pid,
            "a copy is the same record");
}

void fuzz_datagram(std::string_view data) {
    if (auto decoded = DecodedRecord::decode(data)) check_round_trip(*decoded);
    size_t delivered = 0;
    const bool whole = DecodedRecord::for_each(data, [&](DecodedRecord&& decoded) {
        ++delivered;
        check_round_trip(decoded);
    });
    require(!whole || delivered > 0 || data.empty(), "a whole batch that is not empty delivers records");
}

// A string of the record: absent, or a run of one character up to past the
// codec's cut, or bytes of the input.
const char* make_string(FuzzedDataProvider& input, std::string& storage) {
    switch (input.ConsumeIntegralInRange(0, 3)) {
        case 0: return nullptr;
        case 1:
            storage.assign(input.ConsumeIntegralInRange<size_t>(0, 2 * kMaxString), input.ConsumeIntegral<char>());
            break;
        default: storage = input.ConsumeRandomLengthString(64); break;
    }
    return storage.c_str();
}

void fuzz_record(FuzzedDataProvider& input) {
    std::array<std::string, 14> storage;  // the record's 13 strings, then the client's place
    std::vector<smp_interval> intervals(input.ConsumeIntegralInRange<size_t>(0, 4000));
    for (smp_interval& interval : intervals) {
        const auto a = input.ConsumeIntegral<uint64_t>();
        const auto b = input.ConsumeIntegral<uint64_t>();
        interval = {std::min(a, b), std::max(a, b)};
    }
    smp_record r{};
    r.size = input.ConsumeBool() ? sizeof r : offsetof(smp_record, received_bytes);  // a module before ABI 1.4
    r.connection_id = input.ConsumeIntegral<uint64_t>();
    r.request_id = input.ConsumeIntegral<uint64_t>();
    r.worker_id = input.ConsumeIntegral<uint32_t>();
    r.start_us = input.ConsumeIntegral<int64_t>();
    r.end_us = input.ConsumeIntegral<int64_t>();
    r.client_port = input.ConsumeIntegral<uint16_t>();
    r.file_size = input.ConsumeIntegral<int64_t>();
    r.status = input.ConsumeIntegral<int>();
    r.header_bytes = input.ConsumeIntegral<uint64_t>();
    r.body_bytes = input.ConsumeIntegral<uint64_t>();
    r.received_bytes = input.ConsumeIntegral<uint64_t>();
    r.reason = static_cast<smp_end_reason>(input.ConsumeIntegralInRange<int>(SMP_END_COMPLETED, SMP_END_INCOMPLETE));
    const char** strings[] = {&r.module, &r.node,   &r.client_ip,  &r.forwarded_ip, &r.method,
                              &r.path,   &r.target, &r.protocol,   &r.user_agent,   &r.referer,
                              &r.range,  &r.etag,   &r.tls_version};
    for (size_t i = 0; i < std::size(strings); ++i) *strings[i] = make_string(input, storage[i]);
    const char* geo = make_string(input, storage[13]);
    r.intervals = intervals.data();
    r.interval_count = intervals.size();
    const RecordKind kind = input.ConsumeBool() ? RecordKind::transfer : RecordKind::close;
    const auto pid = input.ConsumeIntegral<uint32_t>();

    // Strings of up to 16 KiB and 1000 intervals always fit a record whole.
    size_t string_bytes = 0;
    for (const char* text : smp::record_strings(r))
        if (text != nullptr) string_bytes += std::min(std::strlen(text), kMaxString) + 1;
    const bool strings_fit = string_bytes <= 16 * 1024;

    std::string batch = "framed records follow";
    batch.clear();
    smp::append_record(r, kind, pid, batch, geo);
    require(batch.size() <= sizeof(uint32_t) + smp::kMaxRecordBytes, "an encoding fits kMaxRecordBytes");
    smp::append_record(r, kind, pid, batch, geo);
    size_t delivered = 0;
    const bool whole = DecodedRecord::for_each(batch, [&](DecodedRecord&& decoded) {
        ++delivered;
        require(decoded.kind == kind && decoded.pid == pid, "kind and pid survive");
        require((decoded.geo() == nullptr) == (geo == nullptr), "the place survives, or its absence");
        require(same_record(r, decoded.record(), strings_fit ? Cut::to_max_string : Cut::to_fit_a_record),
                "a record survives the codec");
        const size_t kept = decoded.record().interval_count;
        if (strings_fit && r.interval_count <= kFewIntervals)
            require(kept == r.interval_count, "the intervals of a small record are all kept");
        require(kept <= r.interval_count && std::equal(r.intervals, r.intervals + kept, decoded.record().intervals,
                                                       [](const smp_interval& x, const smp_interval& y) {
                                                           return x.first == y.first && x.last == y.last;
                                                       }),
                "the intervals kept are the first ones");
        check_round_trip(decoded);
    });
    require(whole && delivered == 2, "a batch of two records delivers two");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    if (data[0] % 2 == 0) {
        fuzz_datagram(smp::fuzz::as_text(data + 1, size - 1));
    } else {
        FuzzedDataProvider input(data + 1, size - 1);
        fuzz_record(input);
    }
    return 0;
}
