// Signed, expiring links (nginx's secure_link, lighttpd's mod_secdownload):
// PATH?expires=UNIX_SECONDS&signature=SIG, where SIG is the base64url form,
// without padding, of HMAC-SHA256(secret, PATH "\n" expires ["\n" client IP]).
// One copy, used by http_download to check a link and by `smprotocol sign`
// to make one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace smp::http {

// The signature of `path` (as requested: "/dir/file.bin", decoded) until
// `expires`, bound to `client_ip` when it is not empty.
std::string link_signature(std::string_view secret, std::string_view path, int64_t expires, std::string_view client_ip);

// Equal, compared in a time that does not say where they differ (the
// dashboard's token, a link's signature): OpenSSL's CRYPTO_memcmp.
bool same_secret(std::string_view a, std::string_view b);

enum class LinkCheck {
    valid,
    unsigned_link,  // no expires or no signature, or one that is not a number
    bad_signature,  // signed by none of the secrets (or for another path, time or address)
    expired,        // rightly signed, and its time is past
};

// Checks the `expires` and `signature` of `query` (the target's query
// string) for `path` against every secret in turn, the signatures compared
// in constant time. An expired link is told apart only once its signature
// is right: a forged one is refused as such, whatever its time.
LinkCheck check_link(const std::vector<std::string>& secrets, std::string_view path, std::string_view query,
                     std::string_view client_ip, int64_t now_s);

}  // namespace smp::http
