#include "secure_link.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <charconv>

#include "path.hpp"

namespace smp::http {
namespace {

// RFC 4648 §5, without padding.
std::string base64url(const unsigned char* data, size_t size) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    out.reserve((size * 4 + 2) / 3);
    for (size_t i = 0; i < size; i += 3) {
        const uint32_t chunk = static_cast<uint32_t>(data[i]) << 16 |
                               (i + 1 < size ? static_cast<uint32_t>(data[i + 1]) << 8 : 0) |
                               (i + 2 < size ? data[i + 2] : 0);
        out += kAlphabet[chunk >> 18 & 63];
        out += kAlphabet[chunk >> 12 & 63];
        if (i + 1 < size) out += kAlphabet[chunk >> 6 & 63];
        if (i + 2 < size) out += kAlphabet[chunk & 63];
    }
    return out;
}

}  // namespace

std::string link_signature(std::string_view secret, std::string_view path, int64_t expires,
                           std::string_view client_ip) {
    std::string message(path);
    message += '\n';
    message += std::to_string(expires);
    if (!client_ip.empty()) {
        message += '\n';
        message += client_ip;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
    return base64url(digest, length);
}

bool same_secret(std::string_view a, std::string_view b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

LinkCheck check_link(const std::vector<std::string>& secrets, std::string_view path, std::string_view query,
                     std::string_view client_ip, int64_t now_s) {
    const auto expires_text = query_parameter(query, "expires");
    const auto signature = query_parameter(query, "signature");
    if (!expires_text || !signature || expires_text->empty() || signature->empty()) return LinkCheck::unsigned_link;
    int64_t expires = 0;
    const char* end = expires_text->data() + expires_text->size();
    if (auto [at, error] = std::from_chars(expires_text->data(), end, expires); error != std::errc() || at != end)
        return LinkCheck::unsigned_link;
    for (const std::string& secret : secrets) {
        const std::string expected = link_signature(secret, path, expires, client_ip);
        if (same_secret(expected, *signature)) return expires < now_s ? LinkCheck::expired : LinkCheck::valid;
    }
    return LinkCheck::bad_signature;
}

}  // namespace smp::http
