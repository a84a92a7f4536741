// Records on the wire between a worker and the stats collector: one
// datagram per record, fixed-size fields first, then the strings, then the
// byte intervals. Both ends are the same binary, so native byte order is used.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "smp_module.h"

namespace smp {

enum class RecordKind : uint8_t { transfer = 1, close = 2 };

// The largest datagram a record becomes; longer strings are cut to fit.
constexpr size_t kMaxRecordBytes = 32 * 1024;

// Appends the encoding of `record` to `out` (cleared first).
void encode_record(const smp_record& record, RecordKind kind, uint32_t pid, std::string& out);

// A decoded record that owns its strings and intervals.
class DecodedRecord {
   public:
    RecordKind kind = RecordKind::close;
    uint32_t pid = 0;  // the worker process that sent it
    const smp_record& record() const { return record_; }

    // Empty when `data` is not a whole, valid encoding.
    static std::optional<DecodedRecord> decode(std::string_view data);

    DecodedRecord() = default;
    DecodedRecord(const DecodedRecord& other) { *this = other; }
    DecodedRecord& operator=(const DecodedRecord& other);

   private:
    void bind();  // points record_'s strings and intervals at this object's storage

    static constexpr size_t kStrings = 12;
    smp_record record_{};
    std::array<std::string, kStrings> strings_;
    std::array<bool, kStrings> present_{};
    std::vector<smp_interval> intervals_;
};

}  // namespace smp
