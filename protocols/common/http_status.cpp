#include "http_status.hpp"

namespace smp::protocol {

smp_end_reason end_reason_for_status(int status, StatusFrom from) {
    switch (status) {
        case 304: return SMP_END_NOT_MODIFIED;
        case 401:
        case 403: return SMP_END_FORBIDDEN;
        case 404: return SMP_END_NOT_FOUND;
        // This server answers 410 only to a signed link whose time ran out;
        // an origin's 410 is a file that is gone.
        case 410: return from == StatusFrom::server ? SMP_END_LINK_EXPIRED : SMP_END_NOT_FOUND;
        case 405:
        case 501: return SMP_END_METHOD_NOT_ALLOWED;
        case 412: return SMP_END_PRECONDITION_FAILED;
        case 416: return SMP_END_RANGE_NOT_SATISFIABLE;
        case 429: return SMP_END_REJECTED_LIMIT;
        // The origin could not be reached or did not answer in time.
        case 502:
        case 504: return SMP_END_UPSTREAM_ERROR;
        // The client's HTTP version: its request, not the server, is at fault.
        case 505: return from == StatusFrom::server ? SMP_END_BAD_REQUEST : SMP_END_UPSTREAM_ERROR;
        default: break;
    }
    if (status >= 500) return from == StatusFrom::server ? SMP_END_INTERNAL_ERROR : SMP_END_UPSTREAM_ERROR;
    if (status >= 400) return SMP_END_BAD_REQUEST;
    return SMP_END_COMPLETED;
}

}  // namespace smp::protocol
