// Request paths: percent-decoded once and normalised to a path relative to
// the served root, refusing whatever could step outside it.
#pragma once

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

}  // namespace smp::http
