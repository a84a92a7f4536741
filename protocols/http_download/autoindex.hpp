// Directory listings (autoindex): what a directory holds, read with the
// rule of what is served (file_cache.hpp's open_served), sorted, and
// written as an HTML page or a JSON array. Reading is blocking disk work:
// the worker runs it on libuv's thread pool (connection.cpp), never on its
// loop. docs/http.md, "Directory listings", says what is listed and how.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "file_cache.hpp"

namespace smp::http {

enum class Autoindex { off, html, json };

struct ListingEntry {
    std::string name;  // as the directory holds it: any bytes but '/' and NUL
    bool directory = false;
    uint64_t size = 0;  // files only
    int64_t mtime_s = 0;
};

struct Listing {
    std::vector<ListingEntry> entries;
    bool truncated = false;  // the directory holds more names than were read
    size_t names_read = 0;   // when truncated: how many were (max_entries), listed or not
};

// Reads the directory `directory` (relative, normalised, "" or ending in
// '/') beneath the root: every entry a request would be served (a regular
// file or a directory by open_served, so symlinks that leave the root,
// absolute symlinks and special files are left out), except names that
// start with '.', which are served by name but never listed. At most
// `max_entries`; `truncated` when there were more. ok, or why the
// directory itself cannot be read.
OpenResult read_listing(int root_fd, std::string_view directory, size_t max_entries, Listing& listing);

// Directories first, then files, each in byte order of their names (no
// locale: the same order on every server).
void sort_listing(std::vector<ListingEntry>& entries);

// A minimal HTML5 page for the directory at `url_path` (decoded, with its
// leading and trailing '/'), appended to `out`: names HTML-escaped as text,
// percent-encoded in links.
void render_html(std::string_view url_path, const Listing& listing, std::string& out);

// A JSON array of {"name", "type": "file"|"directory", "size" (files), "mtime",
// "href"}, appended to `out`.
void render_json(const Listing& listing, std::string& out);

// `text` with every byte that is not part of valid UTF-8 replaced by U+FFFD,
// so that a page or a JSON string of it is valid UTF-8 (the href keeps the
// exact bytes).
std::string valid_utf8(std::string_view text);

}  // namespace smp::http
