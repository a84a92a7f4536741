// Why an exchange ended, from the status of its response: one mapping for
// every protocol module, so that a status means the same in every record.
#pragma once

#include "smp_module.h"

namespace smp::protocol {

// Who chose the status: this server, or the origin behind a proxy (forward),
// whose server errors are the upstream's failure, not ours.
enum class StatusFrom { server, origin };

smp_end_reason end_reason_for_status(int status, StatusFrom from = StatusFrom::server);

}  // namespace smp::protocol
