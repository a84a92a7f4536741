// The Range header of RFC 9110 §14.2, for bytes.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace smp::http {

// A closed interval [first, last] of a representation, already clamped to it.
struct ByteRange {
    uint64_t first = 0;
    uint64_t last = 0;
    uint64_t length() const { return last - first + 1; }
    bool operator==(const ByteRange&) const = default;
};

enum class RangeOutcome {
    ignore,         // no usable Range: send the whole representation (200)
    partial,        // 206 with `ranges`
    unsatisfiable,  // 416 with Content-Range: bytes */size
};

struct RangeRequest {
    RangeOutcome outcome = RangeOutcome::ignore;
    std::vector<ByteRange> ranges;
};

// Evaluates `header` against a representation of `size` bytes. A header that
// is not valid `bytes=` syntax, or uses another unit, is ignored, as §14.2
// allows. Overlapping ranges are merged and then sorted; more than
// `max_ranges` ranges are ignored (a full 200), as §17.15 allows, which is
// what nginx does with max_ranges.
// `ranges` is cleared and reused, so a caller can keep its capacity.
void parse_range(std::string_view header, uint64_t size, size_t max_ranges, RangeRequest& result);

}  // namespace smp::http
