#include "https_redirect.hpp"

#include "http1.hpp"
#include "response.hpp"

namespace smp::http {
namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then
// "://" for a target with an authority. The length of "scheme://", or 0.
size_t scheme_prefix_length(std::string_view target) {
    if (target.empty() || !is_alpha(target[0])) return 0;
    size_t i = 1;
    while (i < target.size() && (is_alpha(target[i]) || (target[i] >= '0' && target[i] <= '9') || target[i] == '+' ||
                                 target[i] == '-' || target[i] == '.'))
        ++i;
    return target.substr(i, 3) == "://" ? i + 3 : 0;
}

// uri-host without ":" port: an IP literal keeps its brackets; a reg-name or
// IPv4 address holds no colon.
std::string_view without_port(std::string_view host) {
    if (!host.empty() && host.front() == '[') return host.substr(0, host.find(']') + 1);
    return host.substr(0, host.find(':'));
}

}  // namespace

void append_https_location(std::string& out, std::string_view host_field, std::string_view local_ip,
                           uint16_t https_port, std::string_view target) {
    std::string_view host = trim(host_field);
    std::string_view path_and_query = target;
    if (const size_t prefix = scheme_prefix_length(target); prefix > 0) {
        // Absolute form: its authority names the host, user information aside.
        const std::string_view rest = target.substr(prefix);
        const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
        const size_t at = authority.rfind('@');
        host = at == std::string_view::npos ? authority : authority.substr(at + 1);
        path_and_query = rest.substr(authority.size());
    }
    host = without_port(host);
    out += "https://";
    if (!host.empty()) {
        out += host;
    } else if (local_ip.find(':') != std::string_view::npos) {
        out += '[';
        out += local_ip;
        out += ']';
    } else {
        out += local_ip;
    }
    if (https_port != kDefaultHttpsPort) {
        out += ':';
        smp::protocol::append_number(out, https_port);
    }
    if (path_and_query.empty() || path_and_query.front() != '/') out += '/';
    // An asterisk or authority form has no path to keep; a query after an
    // absolute form's authority is kept after the "/".
    if (path_and_query.empty() || path_and_query.front() == '/' || path_and_query.front() == '?') out += path_and_query;
}

}  // namespace smp::http
