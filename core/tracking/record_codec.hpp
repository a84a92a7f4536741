// Records on the wire between a worker and the stats collector: fixed-size
// fields first, then the byte intervals, then the strings, each followed by a
// NUL. Both ends are the same binary, so native byte order is used. The
// spool and the record logs keep encoded records across an upgrade, so the
// decoder also reads the layouts of the versions before (SMR5 without the
// place: NULL; SMR4 without tls_version: NULL; SMR3 without log_number and log_index too: 0; SMR2
// without received_bytes too: 0).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "smp_module.h"

namespace smp {

// The last of smp_end_reason this build knows: keep up with smp_module.h.
// A record or snapshot with a later one was not written by this build.
constexpr smp_end_reason kLastEndReason = SMP_END_LINK_EXPIRED;

enum class RecordKind : uint8_t { transfer = 1, close = 2 };

// The largest encoding of one record: longer strings are cut to fit (to
// 4096 bytes each at most), and the intervals that do not fit are left out.
constexpr size_t kMaxRecordBytes = 32 * 1024;
// Appends the encoding of `record` to `batch`, framed by its length
// (uint32_t): a spool entry holds records so framed.
// `geo` is the client's place (encode_geo) when the worker looked it up
// before shortening the address (privacy.anonymize_ip), else NULL.
void append_record(const smp_record& record, RecordKind kind, uint32_t pid, std::string& batch,
                   const char* geo = nullptr);

// The record's strings, in the order they are encoded.
constexpr size_t kRecordStrings = 13;
std::array<const char*, kRecordStrings> record_strings(const smp_record& r);

// A decoded record: the record's strings and intervals point into its
// encoding (the format carries the strings NUL-terminated and the intervals
// aligned for that), which is either a heap block it owns (decode) or bytes
// that outlive it (view: a record log's ring, read in place). A move keeps
// the bytes, so moving a record costs no allocation; a copy owns its bytes.
class DecodedRecord {
   public:
    RecordKind kind = RecordKind::close;
    uint32_t pid = 0;  // the worker process that sent it
    const smp_record& record() const { return record_; }
    // The client's place as the worker found it (encode_geo), or NULL.
    const char* geo() const { return geo_; }
    void set_reason(smp_end_reason reason) { record_.reason = reason; }
    void set_log_place(uint64_t number, uint64_t index) {
        record_.log_number = number;
        record_.log_index = index;
    }
    // Copies the bytes of a view, so that the record outlives them.
    void own();
    // The bytes the record owns (empty for a view), for whoever keeps the
    // record's fields (record()) longer than this object.
    std::unique_ptr<char[]> take_bytes() { return std::move(bytes_); }

    // Empty when `data` is not a whole, valid encoding of one record.
    static std::optional<DecodedRecord> decode(std::string_view data);
    // The same without a copy: `data` (8-aligned) must outlive the record.
    static std::optional<DecodedRecord> view(std::string_view data);
    // The records of a batch, in order, to `each`; false when the batch is
    // malformed (the records before the damage were still delivered).
    template <typename Each>
    static bool for_each(std::string_view batch, Each&& each);

    DecodedRecord() = default;
    DecodedRecord(const DecodedRecord& other) { *this = other; }
    DecodedRecord(DecodedRecord&& other) noexcept = default;
    DecodedRecord& operator=(const DecodedRecord& other);
    DecodedRecord& operator=(DecodedRecord&& other) noexcept = default;

   private:
    smp_record record_{};
    const char* geo_ = nullptr;
    std::string_view data_;          // the encoding the record points into
    std::unique_ptr<char[]> bytes_;  // data_'s bytes when owned
};

template <typename Each>
bool DecodedRecord::for_each(std::string_view batch, Each&& each) {
    while (!batch.empty()) {
        uint32_t length = 0;
        if (batch.size() < sizeof length) return false;
        std::memcpy(&length, batch.data(), sizeof length);
        batch.remove_prefix(sizeof length);
        if (length > batch.size()) return false;
        auto decoded = decode(batch.substr(0, length));
        if (!decoded) return false;
        each(std::move(*decoded));
        batch.remove_prefix(length);
    }
    return true;
}

}  // namespace smp
