#include "autoindex.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <memory>

#include "path.hpp"
#include "report_format.hpp"
#include "response.hpp"

namespace smp::http {
namespace {

struct DirectoryCloser {
    void operator()(DIR* directory) const noexcept { closedir(directory); }
};

// The length of the valid UTF-8 sequence at the start of `text`, 0 when
// there is none (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF).
size_t utf8_sequence_length(std::string_view text) {
    const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
    const auto continuation = [&](size_t i) { return i < text.size() && (byte(i) & 0xc0) == 0x80; };
    const unsigned char first = byte(0);
    if (first < 0x80) return 1;
    if (first >= 0xc2 && first <= 0xdf) return continuation(1) ? 2 : 0;
    if (first >= 0xe0 && first <= 0xef) {
        if (!continuation(1) || !continuation(2)) return 0;
        if (first == 0xe0 && byte(1) < 0xa0) return 0;   // overlong
        if (first == 0xed && byte(1) >= 0xa0) return 0;  // a surrogate
        return 3;
    }
    if (first >= 0xf0 && first <= 0xf4) {
        if (!continuation(1) || !continuation(2) || !continuation(3)) return 0;
        if (first == 0xf0 && byte(1) < 0x90) return 0;   // overlong
        if (first == 0xf4 && byte(1) >= 0x90) return 0;  // past U+10FFFF
        return 4;
    }
    return 0;
}

// HTML text and double-quoted attribute values alike.
void append_html_escaped(std::string& out, std::string_view text) {
    for (const char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
}

// The link to an entry, relative to the listing's own URL: the name
// percent-encoded as one segment, and a '/' after a directory's.
void append_href(std::string& out, const ListingEntry& entry) {
    append_percent_encoded(out, entry.name, false);
    if (entry.directory) out += '/';
}

}  // namespace

OpenResult read_listing(int root_fd, std::string_view directory, size_t max_entries, Listing& listing) {
    int fd = -1;
    struct stat info {};
    const OpenResult opened = open_served(root_fd, directory, fd, info);
    if (opened != OpenResult::is_directory) {
        if (fd >= 0) close(fd);
        return opened == OpenResult::ok ? OpenResult::not_found : opened;
    }
    std::unique_ptr<DIR, DirectoryCloser> entries(fdopendir(fd));
    if (!entries) {
        close(fd);
        return OpenResult::error;
    }
    std::string path(directory);
    const size_t prefix = path.size();
    size_t looked_at = 0;
    while (const dirent* found = readdir(entries.get())) {
        const std::string_view name = found->d_name;
        if (name.empty() || name == "." || name == "..") continue;
        // Every name counts, listed or not: a directory of a million
        // dot-files or dangling links costs no more than one of max_entries.
        if (looked_at++ == max_entries) {
            listing.truncated = true;
            listing.names_read = max_entries;
            break;
        }
        if (name.front() == '.') continue;  // dot-files are not listed
        // Each entry as a request would find it: a symlink is followed
        // beneath the root, or left out.
        path.resize(prefix);
        path += name;
        int entry_fd = -1;
        struct stat entry_info {};
        const OpenResult served = open_served(root_fd, path, entry_fd, entry_info);
        if (entry_fd >= 0) close(entry_fd);
        if (served != OpenResult::ok && served != OpenResult::is_directory) continue;
        ListingEntry& entry = listing.entries.emplace_back();
        entry.name = name;
        entry.directory = served == OpenResult::is_directory;
        entry.size = entry.directory ? 0 : static_cast<uint64_t>(entry_info.st_size);
        entry.mtime_s = entry_info.st_mtim.tv_sec;
    }
    return OpenResult::ok;
}

void sort_listing(std::vector<ListingEntry>& entries) {
    std::sort(entries.begin(), entries.end(), [](const ListingEntry& a, const ListingEntry& b) {
        if (a.directory != b.directory) return a.directory;
        return a.name < b.name;  // std::string compares as unsigned bytes
    });
}

std::string valid_utf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    while (!text.empty()) {
        const size_t length = utf8_sequence_length(text);
        if (length == 0) {
            out += "\xef\xbf\xbd";  // U+FFFD REPLACEMENT CHARACTER
            text.remove_prefix(1);
        } else {
            out.append(text.substr(0, length));
            text.remove_prefix(length);
        }
    }
    return out;
}

void render_html(std::string_view url_path, const Listing& listing, std::string& out) {
    const std::string title = valid_utf8(url_path);
    out += "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>Index of ";
    append_html_escaped(out, title);
    out += "</title>\n</head>\n<body>\n<h1>Index of ";
    append_html_escaped(out, title);
    out += "</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n";
    if (url_path != "/") out += "<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n";
    for (const ListingEntry& entry : listing.entries) {
        out += "<tr><td><a href=\"";
        append_href(out, entry);
        out += "\">";
        append_html_escaped(out, valid_utf8(entry.name));
        if (entry.directory) out += '/';
        out += "</a></td><td>";
        if (entry.directory)
            out += '-';
        else
            smp::protocol::append_number(out, entry.size);
        out += "</td><td>";
        out += smp_report::utc_time(entry.mtime_s * 1'000'000);
        out += "</td></tr>\n";
    }
    out += "</table>\n";
    if (listing.truncated) {
        // The names read, not the entries listed: dot-files and entries
        // that cannot be served were read too, and left out.
        out += "<p>This listing is cut: the server read only the first ";
        smp::protocol::append_number(out, listing.names_read);
        out += " names in this folder.</p>\n";
    }
    out += "</body>\n</html>\n";
}

void render_json(const Listing& listing, std::string& out) {
    out += '[';
    bool first = true;
    for (const ListingEntry& entry : listing.entries) {
        out += first ? "\n" : ",\n";
        first = false;
        out += "{\"name\": ";
        smp_report::append_json_string(out, valid_utf8(entry.name).c_str());
        out += entry.directory ? ", \"type\": \"directory\"" : ", \"type\": \"file\", \"size\": ";
        if (!entry.directory) smp::protocol::append_number(out, entry.size);
        out += ", \"mtime\": \"";
        out += smp_report::utc_time(entry.mtime_s * 1'000'000);
        out += "\", \"href\": \"";
        append_href(out, entry);  // percent-encoded: nothing in it needs a JSON escape
        out += "\"}";
    }
    out += "\n]\n";
}

}  // namespace smp::http
