#include "record_codec.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "byte_codec.hpp"

namespace smp {
namespace {

constexpr uint32_t kMagic = 0x534d5236;  // "SMR6": bump when the layout changes
// The layouts before the place (privacy.anonymize_ip), before tls_version
// (ABI 1.9), before log_number and log_index (ABI 1.6), and before
// received_bytes (ABI 1.4), still found in spool files and record logs
// written by an earlier version: decoded with those fields NULL or 0.
constexpr uint32_t kMagicWithoutGeo = 0x534d5235;       // "SMR5"
constexpr uint32_t kMagicWithoutTls = 0x534d5234;       // "SMR4"
constexpr uint32_t kMagicWithoutLog = 0x534d5233;       // "SMR3"
constexpr uint32_t kMagicWithoutReceived = 0x534d5232;  // "SMR2"
constexpr uint16_t kAbsent = 0xffff;
constexpr uint8_t kLastReason = kLastEndReason;
constexpr size_t kMaxString = 4096;

struct Fixed {
    uint32_t magic;
    uint32_t pid;
    uint64_t connection_id;
    uint64_t request_id;
    int64_t start_us;
    int64_t end_us;
    int64_t file_size;
    uint64_t header_bytes;
    uint64_t body_bytes;
    uint32_t worker_id;
    int32_t status;
    uint32_t interval_count;
    uint16_t client_port;
    uint8_t reason;
    uint8_t kind;
    uint16_t lengths[12];     // without the NUL that follows each string
    uint64_t received_bytes;  // SMR3 on; an SMR2 fixed part ends before it
    uint64_t log_number;      // SMR4 on; an SMR3 fixed part ends before it
    uint64_t log_index;
    // SMR5 on; an SMR4 fixed part ends before it. The string follows etag.
    uint16_t tls_version_length;
    // SMR6 on (SMR5 has zero here, read as absent). The string follows tls_version.
    uint16_t geo_length;
    uint16_t unused[2];  // zero: keeps the size a multiple of 8
};
// The intervals follow the fixed part; a decoded record keeps both in one
// heap block, where this keeps the intervals aligned.
static_assert(sizeof(Fixed) % alignof(smp_interval) == 0);
static_assert(offsetof(Fixed, received_bytes) % alignof(smp_interval) == 0);
static_assert(offsetof(Fixed, log_number) % alignof(smp_interval) == 0);
static_assert(offsetof(Fixed, tls_version_length) % alignof(smp_interval) == 0);

// The record's strings, then the place.
constexpr size_t kStringCount = kRecordStrings + 1;
constexpr size_t kTls = kRecordStrings - 1;
constexpr size_t kGeo = kRecordStrings;

size_t fixed_size_of(uint32_t magic) {
    switch (magic) {
        case kMagic:
        case kMagicWithoutGeo: return sizeof(Fixed);
        case kMagicWithoutTls: return offsetof(Fixed, tls_version_length);
        case kMagicWithoutLog: return offsetof(Fixed, log_number);
        case kMagicWithoutReceived: return offsetof(Fixed, received_bytes);
        default: return 0;
    }
}

// The length of each string, in wire order: the twelve of every layout, then
// tls_version (absent before SMR5), then the place (absent before SMR6).
std::array<uint16_t*, kStringCount> lengths_of(Fixed& fixed) {
    std::array<uint16_t*, kStringCount> lengths{};
    for (size_t i = 0; i < std::size(fixed.lengths); ++i) lengths[i] = &fixed.lengths[i];
    lengths[kTls] = &fixed.tls_version_length;
    lengths[kGeo] = &fixed.geo_length;
    return lengths;
}

}  // namespace

std::array<const char*, kRecordStrings> record_strings(const smp_record& r) {
    return {r.module,
            r.node,
            r.client_ip,
            r.forwarded_ip,
            r.method,
            r.path,
            r.target,
            r.protocol,
            r.user_agent,
            r.referer,
            r.range,
            r.etag,
            smp_record_tls_version(&r)};
}

void append_record(const smp_record& record, RecordKind kind, uint32_t pid, std::string& out, const char* geo) {
    const size_t frame = out.size();
    append_value(out, uint32_t{0});  // the length, written once known
    Fixed fixed{};
    fixed.magic = kMagic;
    fixed.pid = pid;
    fixed.connection_id = record.connection_id;
    fixed.request_id = record.request_id;
    fixed.start_us = record.start_us;
    fixed.end_us = record.end_us;
    fixed.file_size = record.file_size;
    fixed.header_bytes = record.header_bytes;
    fixed.body_bytes = record.body_bytes;
    fixed.received_bytes = smp_record_received_bytes(&record);
    fixed.log_number = SMP_HAS(&record, log_number) ? record.log_number : 0;
    fixed.log_index = smp_record_log_index(&record);
    fixed.worker_id = record.worker_id;
    fixed.status = record.status;
    fixed.client_port = record.client_port;
    fixed.reason = static_cast<uint8_t>(record.reason);
    fixed.kind = static_cast<uint8_t>(kind);
    // The strings take their room first and the intervals what is left, so
    // that no encoding is larger than kMaxRecordBytes: twelve strings of
    // kMaxString alone would not fit. Each string's NUL is set aside. The
    // short tls_version and place are given their room before the others
    // (they are sent last), so that long strings never cut them.
    std::array<const char*, kStringCount> strings{};
    std::ranges::copy(record_strings(record), strings.begin());
    strings[kGeo] = geo;
    const auto lengths = lengths_of(fixed);
    size_t room = kMaxRecordBytes - sizeof(Fixed) - strings.size();
    for (size_t step = 0; step < strings.size(); ++step) {
        const size_t i = step < 2 ? kTls + step : step - 2;
        if (strings[i] == nullptr) {
            *lengths[i] = kAbsent;
            continue;
        }
        const size_t length = std::min({std::strlen(strings[i]), kMaxString, room});
        *lengths[i] = static_cast<uint16_t>(length);
        room -= length;
    }
    fixed.interval_count = static_cast<uint32_t>(std::min(record.interval_count, room / sizeof(smp_interval)));
    append_value(out, fixed);
    if (fixed.interval_count > 0)
        out.append(reinterpret_cast<const char*>(record.intervals), fixed.interval_count * sizeof(smp_interval));
    for (size_t i = 0; i < strings.size(); ++i)
        if (*lengths[i] != kAbsent) {
            out.append(strings[i], *lengths[i]);
            out += '\0';
        }
    const auto length = static_cast<uint32_t>(out.size() - frame - sizeof(uint32_t));
    std::memcpy(out.data() + frame, &length, sizeof length);
}

DecodedRecord& DecodedRecord::operator=(const DecodedRecord& other) {
    if (this == &other) return *this;
    if (other.data_.empty()) {
        *this = DecodedRecord();
    } else {
        *this = *decode(other.data_);
        record_.reason = other.record_.reason;  // set_reason may have changed it
        record_.log_number = other.record_.log_number;
        record_.log_index = other.record_.log_index;
    }
    kind = other.kind;
    pid = other.pid;
    return *this;
}

void DecodedRecord::own() {
    if (bytes_ || data_.empty()) return;
    *this = DecodedRecord(*this);
}

std::optional<DecodedRecord> DecodedRecord::decode(std::string_view data) {
    auto bytes = std::make_unique_for_overwrite<char[]>(data.size());
    if (!data.empty()) std::memcpy(bytes.get(), data.data(), data.size());
    auto decoded = view(std::string_view(bytes.get(), data.size()));
    if (decoded) decoded->bytes_ = std::move(bytes);
    return decoded;
}

std::optional<DecodedRecord> DecodedRecord::view(std::string_view data) {
    Fixed fixed{};
    uint32_t magic = 0;
    if (data.size() < sizeof magic) return std::nullopt;
    std::memcpy(&magic, data.data(), sizeof magic);
    const size_t fixed_size = fixed_size_of(magic);
    if (fixed_size == 0 || data.size() < fixed_size) return std::nullopt;
    fixed.tls_version_length = kAbsent;  // unless the layout has it
    std::memcpy(&fixed, data.data(), fixed_size);
    if (magic != kMagic) fixed.geo_length = kAbsent;
    if (fixed.kind != static_cast<uint8_t>(RecordKind::transfer) &&
        fixed.kind != static_cast<uint8_t>(RecordKind::close))
        return std::nullopt;
    // A reason that smp_end_reason does not name is not a value of the type.
    if (fixed.reason > kLastReason) return std::nullopt;
    // Check the layout before pointing at anything.
    size_t expected = fixed_size + size_t{fixed.interval_count} * sizeof(smp_interval);
    const auto lengths = lengths_of(fixed);
    for (const uint16_t* length_at : lengths) {
        const uint16_t length = *length_at;
        if (length == kAbsent) continue;
        if (length > kMaxString) return std::nullopt;
        expected += length + 1u;
    }
    if (data.size() != expected) return std::nullopt;
    // The intervals are read in place: the caller's bytes are 8-aligned.
    if (reinterpret_cast<uintptr_t>(data.data()) % alignof(smp_interval) != 0) return std::nullopt;

    DecodedRecord decoded;
    decoded.data_ = data;
    const char* bytes = data.data();
    smp_record& r = decoded.record_;
    r.intervals = reinterpret_cast<const smp_interval*>(bytes + fixed_size);
    r.interval_count = fixed.interval_count;
    for (size_t i = 0; i < r.interval_count; ++i)
        if (r.intervals[i].last < r.intervals[i].first) return std::nullopt;
    const char** fields[] = {&r.module, &r.node,   &r.client_ip,   &r.forwarded_ip, &r.method,
                             &r.path,   &r.target, &r.protocol,    &r.user_agent,   &r.referer,
                             &r.range,  &r.etag,   &r.tls_version, &decoded.geo_};
    static_assert(std::size(fields) == kStringCount);
    size_t at = fixed_size + r.interval_count * sizeof(smp_interval);
    for (size_t i = 0; i < std::size(fields); ++i) {
        if (*lengths[i] == kAbsent) continue;
        if (bytes[at + *lengths[i]] != '\0') return std::nullopt;
        *fields[i] = bytes + at;
        at += *lengths[i] + 1u;
    }

    decoded.kind = static_cast<RecordKind>(fixed.kind);
    decoded.pid = fixed.pid;
    r.size = sizeof r;
    r.connection_id = fixed.connection_id;
    r.request_id = fixed.request_id;
    r.worker_id = fixed.worker_id;
    r.start_us = fixed.start_us;
    r.end_us = fixed.end_us;
    r.client_port = fixed.client_port;
    r.file_size = fixed.file_size;
    r.status = fixed.status;
    r.header_bytes = fixed.header_bytes;
    r.body_bytes = fixed.body_bytes;
    r.received_bytes = fixed.received_bytes;  // 0 from an SMR2 record
    r.log_number = fixed.log_number;          // 0 from SMR2 and SMR3
    r.log_index = fixed.log_index;
    r.reason = static_cast<smp_end_reason>(fixed.reason);
    return decoded;
}

}  // namespace smp
