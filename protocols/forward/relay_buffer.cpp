#include "relay_buffer.hpp"

#include <algorithm>
#include <cstring>

namespace smp::forward {

size_t RelayBuffer::make_room() {
    if (end == capacity && begin > 0) {
        std::memmove(data, data + begin, size());
        end -= begin;
        begin = 0;
    }
    return capacity - end;
}

void RelayBuffer::consume(size_t count) {
    begin += count;
    if (begin == end) begin = end = 0;
}

void BodyMap::start(uint64_t first) {
    spans_.clear();
    head_ = 0;
    first_ = first;
    decoded_ = 0;
}

void BodyMap::add(uint64_t wire, uint64_t length) {
    if (length == 0) return;
    if (head_ < spans_.size()) {
        Span& last = spans_.back();
        // A body with a Content-Length arrives as one growing span.
        if (last.wire + last.length == wire && last.body + last.length == decoded_) {
            last.length += length;
            decoded_ += length;
            return;
        }
    }
    spans_.push_back({wire, decoded_, length});
    decoded_ += length;
}

void BodyMap::deliver(uint64_t wire_end, std::vector<smp_interval>& intervals) {
    while (head_ < spans_.size() && spans_[head_].wire < wire_end) {
        Span& span = spans_[head_];
        const uint64_t taken = std::min(span.length, wire_end - span.wire);
        const uint64_t first = first_ + span.body;
        if (!intervals.empty() && intervals.back().last + 1 == first)
            intervals.back().last += taken;
        else
            intervals.push_back({first, first + taken - 1});
        span.wire += taken;
        span.body += taken;
        span.length -= taken;
        if (span.length > 0) break;
        ++head_;
    }
    if (head_ == spans_.size()) {
        spans_.clear();
        head_ = 0;
    }
}

}  // namespace smp::forward
