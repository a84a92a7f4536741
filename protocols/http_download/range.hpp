// The Range header of RFC 9110 §14.2, for bytes.
#pragma once

#include <cstdint>
#include <string>
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

// A piece of a response body, in order: bytes of the response's own text
// (`out`), or of the file.
struct Segment {
    bool from_file = false;
    uint64_t offset = 0;  // into `out`, or into the file
    uint64_t length = 0;
};

// Appends "bytes first-last/size", the value of a Content-Range (§14.4).
void append_content_range(std::string& out, const ByteRange& range, uint64_t size);

// The body of a 206 with several ranges, multipart/byteranges (§14.6): its
// framing appended to `out` and the pieces of the body to `segments`, each
// range's part head from `out`, then its bytes from the file, then the
// closing delimiter. Returns the body's length (its Content-Length).
uint64_t append_multipart(const std::vector<ByteRange>& ranges, uint64_t size, std::string_view content_type,
                          std::string_view boundary, std::string& out, std::vector<Segment>& segments);

}  // namespace smp::http
