// redirect_https: where a request on a plain listener is sent to be asked
// again over HTTPS. Pure, so that its rules are tested without a socket.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace smp::http {

// The port of HTTPS that a URL leaves out.
constexpr uint16_t kDefaultHttpsPort = 443;

// Appends the Location of the 308 that answers `target` (the request target
// as received) on a plain listener: "https://" host [":" port] path-and-query.
// The host is the one the client asked for without its port: the authority
// of an absolute-form target (RFC 9112 §3.2.2: Host is then ignored), else
// `host_field` (the request's Host value, already checked), else, when it is
// empty (HTTP/1.0 without Host), `local_ip`, the address the client reached,
// in brackets when it is IPv6. The target is kept as received, percent
// encoding and query included; an absolute-form one keeps only its path and
// query; one with no path (authority or asterisk form) becomes "/". The port
// is written unless it is 443.
void append_https_location(std::string& out, std::string_view host_field, std::string_view local_ip,
                           uint16_t https_port, std::string_view target);

}  // namespace smp::http
