// `smprotocol sign`: a signed, expiring link to a file, for a site whose
// http_download listener has `secure_link` (docs/http.md).
#pragma once

namespace smp {

// argv[0] is "sign"; returns the process exit code.
int run_sign(int argc, char** argv);

}  // namespace smp
