// Sizes and durations as written in the config: "256KiB", "30s".
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace smp {

// Bytes. A plain number is bytes. Binary units: k, K, KiB, m, M, MiB, g, G,
// GiB, TiB (nginx's k/m/g are binary too); decimal units: KB, MB, GB, TB.
// Empty on garbage, a negative number or overflow.
std::optional<int64_t> parse_size(std::string_view text);

// Milliseconds. A plain number is seconds. Units: ms, s, m or min, h, d.
std::optional<int64_t> parse_duration(std::string_view text);

}  // namespace smp
