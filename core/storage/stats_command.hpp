// `smprotocol stats`: reports asked of the configured store, printed as
// human tables, JSON or CSV (plugins/common/report_format.hpp, which the
// dashboard module shares).
#pragma once

namespace smp {

// argv[0] is "stats". Returns the exit code.
int run_stats(int argc, char** argv);

}  // namespace smp
