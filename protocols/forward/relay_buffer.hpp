// The bytes in flight between two sockets, and where a relayed body's bytes
// sit in the file. Both are bounded: a buffer never grows, and the map holds
// at most one span per body piece that is in the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "smp_module.h"

namespace smp::forward {

// A fixed block of memory from the worker's pool: [begin, end) is unsent.
// Reading into it stops when it is full, which is the whole of the
// backpressure: a peer that does not take bytes stops the other one's reads.
struct RelayBuffer {
    char* data = nullptr;
    size_t capacity = 0;
    size_t begin = 0;
    size_t end = 0;

    size_t size() const { return end - begin; }
    bool empty() const { return begin == end; }
    bool full() const { return size() == capacity; }
    // Room at the tail, after moving the unsent bytes to the front when that
    // makes room. Only call it when no view into the buffer is held.
    size_t make_room();
    void consume(size_t count);
};

// Maps the bytes of a response body as they travel on the wire (framing
// included, counted from the end of the head) to the decoded body offsets
// they carry, so that the bytes the client actually took are recorded as
// file intervals even when the body is chunked.
class BodyMap {
   public:
    // `first` is the file offset of the body's first byte (a 206's range start).
    void start(uint64_t first);
    // The parser found `length` body bytes at wire offset `wire`.
    void add(uint64_t wire, uint64_t length);
    // The client took every wire byte before `wire_end`: appends the file
    // intervals they carried to `intervals` (merged with the last one when
    // they touch).
    void deliver(uint64_t wire_end, std::vector<smp_interval>& intervals);
    uint64_t decoded() const { return decoded_; }

   private:
    struct Span {
        uint64_t wire;
        uint64_t body;
        uint64_t length;
    };
    // A queue without a per-request allocation: spans before `head_` are done.
    std::vector<Span> spans_;
    size_t head_ = 0;
    uint64_t first_ = 0;
    uint64_t decoded_ = 0;
};

}  // namespace smp::forward
