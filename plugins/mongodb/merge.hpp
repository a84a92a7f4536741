// One download, several nodes: the partial downloads that the nodes of a
// cluster stored for one client's download of one file, merged into one
// (docs/scale.md). Plain C++, no libbson: the rules here are what
// merge_test.cpp checks; mongodb.cpp reads and writes them as documents.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "smp_module.h"

namespace smp::mongodb {

// What one node's collector knows of a download: its latest state.
struct Part {
    std::string node;
    uint64_t id = 0;  // unique per node
    uint32_t requests = 0;
    uint64_t bytes_sent = 0;
    uint64_t file_size = 0;
    int64_t first_us = 0;
    int64_t last_us = 0;
    bool finished = false;
    smp_end_reason reason = SMP_END_COMPLETED;
    std::vector<smp_interval> delivered;  // bytes, inclusive
    std::vector<smp_interval> active;     // microseconds, inclusive

    static Part of(const smp_download& download);
};

// The download the parts make together.
struct Merged {
    std::vector<smp_interval> delivered;  // the union of the parts'
    std::vector<smp_interval> active;
    uint64_t file_size = 0;
    uint64_t distinct_bytes = 0;
    uint64_t bytes_sent = 0;  // every part's, repeats included
    uint32_t requests = 0;    // every part's: each request is in exactly one part
    uint32_t resumes = 0;     // the gaps between the united active spans
    int64_t first_us = 0;
    int64_t last_us = 0;
    int64_t active_us = 0;
    bool completed = false;  // the union covers the file
    bool finished = false;   // every part has ended
    smp_end_reason reason = SMP_END_COMPLETED;
    std::vector<std::string> nodes;  // by name, each once
    const Part* first = nullptr;     // the part that started first: the download's node and id
};

// `parts` must not be empty, and must outlive the result (Merged::first).
Merged merge(const std::vector<Part>& parts);

// Whether `part` belongs to a download that is `merged` so far: within
// `window` of it (the nodes' tracking.idle_window), and not begun after a
// download that had already delivered every byte had ended (the same
// client fetching the file again, as one node's tracker rules).
bool joins(const Merged& merged, const Part& part, int64_t window_us);

// The merge key: a download's client, user agent, path and ETag, hashed
// (64-bit FNV-1a over each, each ended by a NUL). Documents with equal keys
// are compared field by field before they merge: a collision costs a read.
int64_t merge_key(const smp_download& download);

}  // namespace smp::mongodb
