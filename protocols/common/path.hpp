// Request paths: percent-decoded once and normalised to a path relative to
// the served root, refusing whatever could step outside it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace smp::http {

enum class PathError {
    none,
    bad_encoding,  // '%' not followed by two hex digits, or no leading '/'
    nul,           // a decoded NUL byte
    escapes_root,  // '..' above the root
};

// Decodes `path` (the path part of the target, without the query) exactly
// once, drops empty and "." segments, applies ".." and writes the result to
// `out` without a leading '/': "" is the root itself. A trailing '/' is kept
// so that "/file/" does not name "file".
PathError normalize_path(std::string_view path, std::string& out);

// RFC 3986 §2.1: `text` with every "%XX" decoded (and '+' as a space in a
// query, as HTML forms write it) into `out`; false when a '%' is not
// followed by two hex digits, with `out` holding what came before it.
bool percent_decode(std::string_view text, std::string& out, bool plus_is_space);

// The reverse, for a path this server writes into a Location or a link:
// `text` appended to `out` with every byte but RFC 3986's unreserved ones
// (letters, digits, "-._~") and, when `keep_slashes`, '/' written as "%XX".
// Nothing is left that a URL or an HTML attribute could read otherwise
// (':' cannot start a scheme, '?' and '#' cannot end the path).
void append_percent_encoded(std::string& out, std::string_view text, bool keep_slashes);

// The decoded value of the first `name=value` in a query string
// ("since=2h&file=a%20b"), "" for a bare `name`; nullopt when absent or
// badly encoded.
std::optional<std::string> query_parameter(std::string_view query, std::string_view name);

}  // namespace smp::http
