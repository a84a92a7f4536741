// The pieces of the project's binary encodings (records, batches, the spool,
// the collector's checkpoint): plain values appended in native byte order
// (the same binary reads what it wrote), taken back with a bounds check, and
// the checksum that finds a torn or damaged file.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace smp {

template <typename T>
void append_value(std::string& out, const T& value) {
    out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

// Takes a T from the front of `data`; false when too short.
template <typename T>
bool take_value(std::string_view& data, T& value) {
    if (data.size() < sizeof value) return false;
    std::memcpy(&value, data.data(), sizeof value);
    data.remove_prefix(sizeof value);
    return true;
}

// FNV-1a, 64 bits: finds a torn write or a damaged file, not an attacker.
inline uint64_t fnv1a(std::string_view data) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (const char c : data) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    return hash;
}

}  // namespace smp
