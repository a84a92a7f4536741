// http_download's Range parser against a plain reading of RFC 9110 §14.1.1:
// the input is the representation's size (decimal, first line) and the
// header value (the rest).
#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "range.hpp"
#include "require.hpp"

using namespace smp::http;
using smp::fuzz::require;

namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

uint64_t saturating_number(std::string_view digits) {
    uint64_t value = 0;
    for (char c : digits) {
        const uint64_t digit = static_cast<uint64_t>(c - '0');
        value = value > (kMax - digit) / 10 ? kMax : value * 10 + digit;
    }
    return value;
}

bool all_digits(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

// The satisfiable ranges of `header` in request order, clamped to `size`, and
// how many range-specs it had; empty when the header is to be ignored.
struct Expected {
    std::vector<ByteRange> ranges;
    size_t specs = 0;
};
std::optional<Expected> expected_ranges(std::string_view header, uint64_t size) {
    const size_t equals = header.find('=');
    if (equals == std::string_view::npos) return std::nullopt;
    std::string unit(header.substr(0, equals));
    std::transform(unit.begin(), unit.end(), unit.begin(), [](char c) { return static_cast<char>(c | 0x20); });
    if (unit != "bytes") return std::nullopt;
    Expected expected;
    std::string_view list = header.substr(equals + 1);
    for (;;) {
        const size_t comma = list.find(',');
        const std::string_view spec = trim(list.substr(0, comma));
        const size_t dash = spec.find('-');
        if (dash == std::string_view::npos) return std::nullopt;
        const std::string_view first = spec.substr(0, dash);
        const std::string_view last = spec.substr(dash + 1);
        if (first.empty()) {  // suffix-range
            if (!all_digits(last)) return std::nullopt;
            const uint64_t suffix = saturating_number(last);
            if (suffix > 0 && size > 0) expected.ranges.push_back({suffix >= size ? 0 : size - suffix, size - 1});
        } else {
            if (!all_digits(first) || (!last.empty() && !all_digits(last))) return std::nullopt;
            const uint64_t from = saturating_number(first);
            const uint64_t to = last.empty() ? kMax : saturating_number(last);
            if (to < from) return std::nullopt;
            if (from < size) expected.ranges.push_back({from, std::min(to, size - 1)});
        }
        ++expected.specs;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return expected;
}

bool overlap(const ByteRange& a, const ByteRange& b) { return a.first <= b.last && b.first <= a.last; }

// Sorted, and overlapping ranges merged (touching ones are not).
std::vector<ByteRange> merged(std::vector<ByteRange> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.first < b.first; });
    std::vector<ByteRange> out;
    for (const ByteRange& range : ranges) {
        if (!out.empty() && overlap(out.back(), range))
            out.back().last = std::max(out.back().last, range.last);
        else
            out.push_back(range);
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view rest = smp::fuzz::as_text(data, size);
    const std::string_view size_line = smp::fuzz::take_line(rest);
    if (!all_digits(size_line)) return 0;
    const uint64_t file_size = saturating_number(size_line);
    const std::string_view header = rest;

    const std::optional<Expected> expected = expected_ranges(header, file_size);
    for (size_t max_ranges : {size_t{1}, size_t{16}}) {
        RangeRequest result;
        result.outcome = RangeOutcome::partial;
        result.ranges = {{7, 3}, {kMax, 0}};  // left over from an earlier request: must go
        parse_range(header, file_size, max_ranges, result);

        if (!expected) {
            require(result.outcome == RangeOutcome::ignore && result.ranges.empty(), "invalid syntax is ignored");
            continue;
        }
        if (expected->ranges.empty()) {
            require(result.outcome == RangeOutcome::unsatisfiable && result.ranges.empty(),
                    "no satisfiable range is a 416");
            continue;
        }
        std::vector<ByteRange> want = expected->ranges;
        // Merging sorted ranges leaves fewer exactly when two of them overlap.
        if (merged(want).size() != want.size()) want = merged(want);
        if (want.size() > max_ranges) {
            require(result.outcome == RangeOutcome::ignore && result.ranges.empty(),
                    "more than max_ranges ranges is a 200");
            continue;
        }
        require(result.outcome == RangeOutcome::partial, "satisfiable ranges are a 206");
        require(result.ranges == want, "the ranges are the requested ones, merged and sorted when they overlap");
        uint64_t total = 0;
        for (const ByteRange& range : result.ranges) {
            require(range.first <= range.last && range.last < file_size, "a range lies within the representation");
            total += range.length();
        }
        require(merged(result.ranges).size() == result.ranges.size(), "no two ranges overlap");
        require(total <= file_size, "the parts are no larger than the representation");
    }
    return 0;
}
