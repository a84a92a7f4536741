#include "autoindex.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;
using namespace smp::http;

namespace {

ListingEntry file(std::string name, uint64_t size, int64_t mtime_s = 0) {
    return {std::move(name), false, size, mtime_s};
}

ListingEntry directory(std::string name) { return {std::move(name), true, 0, 0}; }

std::string html_of(std::string_view url_path, const Listing& listing) {
    std::string out;
    render_html(url_path, listing, out);
    return out;
}

std::string json_of(const Listing& listing) {
    std::string out;
    render_json(listing, out);
    return out;
}

// A temporary root with a secret beside it, as file_cache_test.cpp's.
struct Tree {
    fs::path base;
    fs::path root;
    int root_fd = -1;

    Tree() {
        char pattern[] = "/tmp/smp-autoindex-XXXXXX";
        base = mkdtemp(pattern);
        root = base / "root";
        fs::create_directories(root / "dir" / "sub");
        std::ofstream(base / "secret.txt") << "outside";
        root_fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    ~Tree() {
        close(root_fd);
        fs::remove_all(base);
    }
    void write(const std::string& name, const std::string& text) const {
        std::ofstream(root / name, std::ios::binary | std::ios::trunc) << text;
    }
};

}  // namespace

TEST_CASE("a listing puts directories first, then files, each in byte order") {
    std::vector<ListingEntry> entries = {file("b", 1),        directory("z"), file("B", 1),
                                         file("\xc3\xa9", 1), directory("a"), file("a b", 1)};
    sort_listing(entries);
    std::vector<std::string> names;
    for (const auto& entry : entries) names.push_back(entry.name);
    CHECK(names == std::vector<std::string>{"a", "z", "B", "a b", "b", "\xc3\xa9"});
}

TEST_CASE("the HTML page escapes names as text and percent-encodes them in links") {
    Listing listing;
    listing.entries = {directory("sub dir"), file("<script>alert(1)</script>.bin", 12, 0),
                       file("a\"b'&c#?%.bin", 3, 1764567270), file("caf\xc3\xa9.txt", 5)};
    const std::string page = html_of("/d<i>r/", listing);
    CHECK(page.rfind("<!DOCTYPE html>\n", 0) == 0);
    CHECK(page.find("<meta charset=\"utf-8\">") != std::string::npos);
    CHECK(page.find("<title>Index of /d&lt;i&gt;r/</title>") != std::string::npos);
    CHECK(page.find("<script>") == std::string::npos);
    CHECK(page.find(
              "<a href=\"%3Cscript%3Ealert%281%29%3C%2Fscript%3E.bin\">&lt;script&gt;alert(1)&lt;/script&gt;.bin</a>"
              "</td><td>12</td><td>1970-01-01T00:00:00Z</td>") != std::string::npos);
    CHECK(page.find("<a href=\"a%22b%27%26c%23%3F%25.bin\">a&quot;b&#39;&amp;c#?%.bin</a></td><td>3</td>"
                    "<td>2025-12-01T05:34:30Z</td>") != std::string::npos);
    CHECK(page.find("<a href=\"caf%C3%A9.txt\">caf\xc3\xa9.txt</a>") != std::string::npos);
    CHECK(page.find("<a href=\"sub%20dir/\">sub dir/</a></td><td>-</td>") != std::string::npos);
    CHECK(page.find("<a href=\"../\">") != std::string::npos);
    CHECK(page.find("is cut") == std::string::npos);
}

TEST_CASE("the root's page has no parent link, and a cut listing says so") {
    Listing listing;
    listing.entries = {file("a", 1)};
    listing.truncated = true;
    listing.names_read = 3;  // two of them not listed
    const std::string page = html_of("/", listing);
    CHECK(page.find("href=\"../\"") == std::string::npos);
    CHECK(page.find("<p>This listing is cut: the server read only the first 3 names in this folder.</p>") !=
          std::string::npos);
}

TEST_CASE("the JSON array escapes names and replaces bytes that are not UTF-8") {
    Listing listing;
    listing.entries = {directory("d"), file("q\"b\\s\x01\n.bin", 7, 86400), file("bad\xff\xc3(.bin", 0)};
    CHECK(json_of(listing) ==
          "[\n"
          "{\"name\": \"d\", \"type\": \"directory\", \"mtime\": \"1970-01-01T00:00:00Z\", \"href\": \"d/\"},\n"
          "{\"name\": \"q\\\"b\\\\s\\u0001\\u000a.bin\", \"type\": \"file\", \"size\": 7, "
          "\"mtime\": \"1970-01-02T00:00:00Z\", \"href\": \"q%22b%5Cs%01%0A.bin\"},\n"
          "{\"name\": \"bad\xef\xbf\xbd\xef\xbf\xbd(.bin\", \"type\": \"file\", \"size\": 0, "
          "\"mtime\": \"1970-01-01T00:00:00Z\", \"href\": \"bad%FF%C3%28.bin\"}\n"
          "]\n");
    CHECK(json_of(Listing{}) == "[\n]\n");
}

TEST_CASE("valid UTF-8 is kept, anything else becomes U+FFFD byte by byte") {
    CHECK(valid_utf8("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    CHECK(valid_utf8("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");                                  // overlong '/'
    CHECK(valid_utf8("\xed\xa0\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");                  // a surrogate
    CHECK(valid_utf8("\xf4\x90\x80\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // past U+10FFFF
    CHECK(valid_utf8("a\xe2\x82") == "a\xef\xbf\xbd\xef\xbf\xbd");                                // cut short
}

TEST_CASE("a listing holds what a request would be served, and no dot-file") {
    Tree tree;
    tree.write("dir/a.bin", "12345");
    tree.write("dir/.hidden", "x");
    tree.write("dir/sub/inner.bin", "1");
    fs::create_symlink("a.bin", tree.root / "dir" / "inside-link.bin");
    fs::create_symlink("../../secret.txt", tree.root / "dir" / "outside-link.txt");
    fs::create_symlink(tree.root / "dir" / "a.bin", tree.root / "dir" / "absolute-link.bin");
    fs::create_symlink("missing", tree.root / "dir" / "dangling");
    REQUIRE(mkfifo((tree.root / "dir" / "fifo").c_str(), 0600) == 0);

    Listing listing;
    REQUIRE(read_listing(tree.root_fd, "dir/", 100, listing) == OpenResult::ok);
    sort_listing(listing.entries);
    REQUIRE(listing.entries.size() == 3);
    CHECK(listing.entries[0].name == "sub");
    CHECK(listing.entries[0].directory);
    CHECK(listing.entries[1].name == "a.bin");
    CHECK(listing.entries[1].size == 5);
    CHECK(listing.entries[1].mtime_s > 0);
    CHECK(listing.entries[2].name == "inside-link.bin");
    CHECK(listing.entries[2].size == 5);
    CHECK_FALSE(listing.truncated);

    Listing root;
    REQUIRE(read_listing(tree.root_fd, "", 100, root) == OpenResult::ok);
    REQUIRE(root.entries.size() == 1);
    CHECK(root.entries[0].name == "dir");

    Listing missing;
    CHECK(read_listing(tree.root_fd, "nothing/", 100, missing) == OpenResult::not_found);
    CHECK(read_listing(tree.root_fd, "dir/a.bin", 100, missing) == OpenResult::not_found);
}

TEST_CASE("a listing stops at max_entries and says it was cut") {
    Tree tree;
    for (int i = 0; i < 5; ++i) tree.write("dir/f" + std::to_string(i), "x");
    Listing listing;
    REQUIRE(read_listing(tree.root_fd, "dir/", 3, listing) == OpenResult::ok);
    CHECK(listing.entries.size() == 3);
    CHECK(listing.truncated);
    Listing whole;
    REQUIRE(read_listing(tree.root_fd, "dir/", 6, whole) == OpenResult::ok);
    CHECK(whole.entries.size() == 6);  // dir/sub too
    CHECK_FALSE(whole.truncated);
}

TEST_CASE("names left out of a listing count toward max_entries") {
    // Dot-files (and entries that cannot be served) are read and dropped:
    // without counting them a directory of a million of them is unbounded work.
    Tree tree;
    for (int i = 0; i < 10; ++i) tree.write("dir/.hidden" + std::to_string(i), "x");
    tree.write("dir/shown", "x");  // and dir/sub: 12 names
    Listing cut;
    REQUIRE(read_listing(tree.root_fd, "dir/", 5, cut) == OpenResult::ok);
    CHECK(cut.truncated);
    CHECK(cut.names_read == 5);
    CHECK(cut.entries.size() <= 2);
    Listing whole;
    REQUIRE(read_listing(tree.root_fd, "dir/", 12, whole) == OpenResult::ok);
    CHECK_FALSE(whole.truncated);
    CHECK(whole.entries.size() == 2);
}
