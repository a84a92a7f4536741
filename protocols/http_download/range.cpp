#include "range.hpp"

#include "response.hpp"

#include <algorithm>
#include <limits>

namespace smp::http {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

void skip_spaces(std::string_view& text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
}

// Reads digits, saturating at kMax: a last-pos past any file clamps to its
// end, a first-pos past any file is simply unsatisfiable.
bool read_number(std::string_view& text, uint64_t& value) {
    if (text.empty() || text.front() < '0' || text.front() > '9') return false;
    value = 0;
    while (!text.empty() && text.front() >= '0' && text.front() <= '9') {
        const uint64_t digit = static_cast<uint64_t>(text.front() - '0');
        value = value > (kMax - digit) / 10 ? kMax : value * 10 + digit;
        text.remove_prefix(1);
    }
    return true;
}

bool units_equal(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return (x | 0x20) == (y | 0x20); });
}

}  // namespace

void parse_range(std::string_view header, uint64_t size, size_t max_ranges, RangeRequest& result) {
    result.outcome = RangeOutcome::ignore;
    result.ranges.clear();
    const auto equals = header.find('=');
    if (equals == std::string_view::npos || !units_equal(header.substr(0, equals), "bytes")) return;
    std::string_view text = header.substr(equals + 1);

    size_t specs = 0;
    for (;;) {
        skip_spaces(text);
        uint64_t first = 0;
        uint64_t last = 0;
        bool satisfiable = false;
        if (!text.empty() && text.front() == '-') {  // suffix-range: the last N bytes
            text.remove_prefix(1);
            uint64_t suffix = 0;
            if (!read_number(text, suffix)) return result.ranges.clear();
            satisfiable = suffix > 0 && size > 0;
            first = suffix >= size ? 0 : size - suffix;
            last = size - 1;
        } else {
            if (!read_number(text, first) || text.empty() || text.front() != '-') return result.ranges.clear();
            text.remove_prefix(1);
            last = kMax;
            if (!text.empty() && text.front() >= '0' && text.front() <= '9') {
                read_number(text, last);
                if (last < first) return result.ranges.clear();  // invalid syntax: ignore the header
            }
            satisfiable = first < size;
            last = std::min(last, size - 1);
        }
        ++specs;
        if (satisfiable) result.ranges.push_back({first, last});
        skip_spaces(text);
        if (text.empty()) break;
        if (text.front() != ',') return result.ranges.clear();
        text.remove_prefix(1);
    }
    if (specs == 0) return;
    if (result.ranges.empty()) {
        result.outcome = RangeOutcome::unsatisfiable;
        return;
    }
    auto& ranges = result.ranges;
    // Up to max_ranges (64 at most) ranges are compared pair by pair, so that
    // ranges that do not overlap keep their order. More can only be answered
    // when merging brings them down to max_ranges, and merging sorts them:
    // they are sorted and merged at once. A Range field as long as
    // max_header_size (up to 1 MiB) holds a hundred thousand ranges, which
    // compared pair by pair would hold a worker for tens of seconds.
    const bool sort_and_merge =
        ranges.size() > max_ranges || std::any_of(ranges.begin(), ranges.end(), [&](const ByteRange& a) {
            return std::any_of(ranges.begin(), ranges.end(),
                               [&](const ByteRange& b) { return &a != &b && a.first <= b.last && b.first <= a.last; });
        });
    if (sort_and_merge) {
        std::sort(ranges.begin(), ranges.end(),
                  [](const ByteRange& a, const ByteRange& b) { return a.first < b.first; });
        size_t merged = 0;
        for (size_t i = 1; i < ranges.size(); ++i) {
            if (ranges[i].first <= ranges[merged].last)
                ranges[merged].last = std::max(ranges[merged].last, ranges[i].last);
            else
                ranges[++merged] = ranges[i];
        }
        ranges.resize(merged + 1);
    }
    if (ranges.size() > max_ranges) {
        ranges.clear();
        return;
    }
    result.outcome = RangeOutcome::partial;
}

void append_content_range(std::string& out, const ByteRange& range, uint64_t size) {
    out += "bytes ";
    smp::protocol::append_number(out, range.first);
    out += '-';
    smp::protocol::append_number(out, range.last);
    out += '/';
    smp::protocol::append_number(out, size);
}

uint64_t append_multipart(const std::vector<ByteRange>& ranges, uint64_t size, std::string_view content_type,
                          std::string_view boundary, std::string& out, std::vector<Segment>& segments) {
    uint64_t length = 0;
    for (size_t i = 0; i < ranges.size(); ++i) {
        const ByteRange& r = ranges[i];
        const size_t offset = out.size();
        out += i == 0 ? "--" : "\r\n--";
        out += boundary;
        out += "\r\nContent-Type: ";
        out += content_type;
        out += "\r\nContent-Range: ";
        append_content_range(out, r, size);
        out += "\r\n\r\n";
        segments.push_back({false, offset, out.size() - offset});
        segments.push_back({true, r.first, r.length()});
        length += out.size() - offset + r.length();
    }
    const size_t offset = out.size();
    out += "\r\n--";
    out += boundary;
    out += "--\r\n";
    segments.push_back({false, offset, out.size() - offset});
    return length + out.size() - offset;
}

}  // namespace smp::http
