// `smprotocol stats`: reports asked of the configured store, printed as
// human tables or JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "smp_module.h"

namespace smp {

// argv[0] is "stats". Returns the exit code.
int run_stats(int argc, char** argv);

// "2026-11-24", "2026-11-24T10:30:00" (UTC), or a duration ago ("2h", "7d");
// microseconds since the Unix epoch, empty when invalid.
std::optional<int64_t> parse_time(std::string_view text, int64_t now_us);

// The table as JSON: {"report": ..., "rows": [{column: value, ...}, ...]}.
std::string table_json(const char* report, const smp_table& table);
// The table as aligned text columns with a header line.
std::string table_text(const smp_table& table);

}  // namespace smp
