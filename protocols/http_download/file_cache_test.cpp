#include "file_cache.hpp"

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

// A temporary folder to serve: root/ inside it, and a secret beside root/.
struct Folder {
    fs::path base;
    fs::path root;
    int root_fd = -1;
    MimeTypes types;

    Folder() {
        char pattern[] = "/tmp/smp-file-cache-XXXXXX";
        base = mkdtemp(pattern);
        root = base / "root";
        fs::create_directories(root / "sub");
        write("secret.txt", "outside", base);
        root_fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    ~Folder() {
        close(root_fd);
        fs::remove_all(base);
    }
    void write(const std::string& name, const std::string& text, const fs::path& dir = {}) const {
        std::ofstream((dir.empty() ? root : dir) / name, std::ios::binary | std::ios::trunc) << text;
    }
};

}  // namespace

TEST_CASE("a cached file is opened once and shared") {
    Folder folder;
    folder.write("a.bin", "12345");
    FileCache cache(folder.root_fd, folder.types, 10, 60'000);
    OpenFile* first = nullptr;
    OpenFile* second = nullptr;
    REQUIRE(cache.acquire("a.bin", 0, first) == OpenResult::ok);
    REQUIRE(cache.acquire("a.bin", 1, second) == OpenResult::ok);
    CHECK(first == second);
    CHECK(first->size == 5);
    CHECK(first->references == 2);
    CHECK(first->etag == make_etag(5, first->mtime_ns));
    cache.release(first);
    cache.release(second);
}

TEST_CASE("a file rewritten in place is seen at once, even within the validity time") {
    Folder folder;
    folder.write("a.bin", "12345");
    FileCache cache(folder.root_fd, folder.types, 10, 60'000);
    OpenFile* file = nullptr;
    REQUIRE(cache.acquire("a.bin", 0, file) == OpenResult::ok);
    const std::string old_etag = file->etag;
    cache.release(file);
    folder.write("a.bin", "1234567890");
    REQUIRE(cache.acquire("a.bin", 1, file) == OpenResult::ok);
    CHECK(file->size == 10);
    CHECK(file->etag != old_etag);
    cache.release(file);
}

TEST_CASE("a file replaced by rename is seen after the validity time") {
    Folder folder;
    folder.write("a.bin", "12345");
    FileCache cache(folder.root_fd, folder.types, 10, 1'000);
    OpenFile* held = nullptr;
    REQUIRE(cache.acquire("a.bin", 0, held) == OpenResult::ok);
    folder.write("new.bin", "abcdefgh");
    fs::rename(folder.root / "new.bin", folder.root / "a.bin");
    OpenFile* file = nullptr;
    REQUIRE(cache.acquire("a.bin", 500, file) == OpenResult::ok);
    CHECK(file->size == 5);  // still valid: the old, whole file
    cache.release(file);
    REQUIRE(cache.acquire("a.bin", 1'500, file) == OpenResult::ok);
    CHECK(file->size == 8);
    CHECK(file != held);
    CHECK(held->size == 5);  // a transfer still running keeps its file
    cache.release(file);
    cache.release(held);
}

// Revalidation stats the path instead of opening it (file_cache.cpp): the
// same file is kept, anything else is opened again, as before.
TEST_CASE("after the validity time, a file whose permissions changed is opened again, an unchanged one kept") {
    Folder folder;
    folder.write("a.bin", "12345");
    folder.write("b.bin", "678");
    FileCache cache(folder.root_fd, folder.types, 10, 1'000);
    OpenFile* held = nullptr;
    OpenFile* kept = nullptr;
    REQUIRE(cache.acquire("a.bin", 0, held) == OpenResult::ok);
    REQUIRE(cache.acquire("b.bin", 0, kept) == OpenResult::ok);
    const int kept_fd = kept->fd;
    cache.release(kept);
    const int64_t cached_ctime_ns = held->ctime_ns;
    usleep(20'000);  // past the file system's clock step
    fs::permissions(folder.root / "a.bin", fs::perms::owner_read, fs::perm_options::replace);  // moves ctime
    struct stat now {};
    REQUIRE(stat((folder.root / "a.bin").c_str(), &now) == 0);
    const int64_t ctime_ns = now.st_ctim.tv_sec * 1'000'000'000LL + now.st_ctim.tv_nsec;
    REQUIRE(ctime_ns != cached_ctime_ns);
    OpenFile* file = nullptr;
    // Opened again (which refuses it to a server that may no longer read
    // it); the same file, still readable here, keeps its entry.
    REQUIRE(cache.acquire("a.bin", 1'500, file) == OpenResult::ok);
    CHECK(file == held);
    CHECK(file->ctime_ns == ctime_ns);
    cache.release(file);
    REQUIRE(cache.acquire("b.bin", 1'500, file) == OpenResult::ok);
    CHECK(file == kept);
    CHECK(file->fd == kept_fd);
    CHECK(file->validated_ms == 1'500);
    cache.release(file);
    cache.release(held);
}

TEST_CASE("after the validity time, a file replaced by a symlink out of the root is refused") {
    Folder folder;
    folder.write("a.bin", "12345");
    FileCache cache(folder.root_fd, folder.types, 10, 1'000);
    OpenFile* file = nullptr;
    REQUIRE(cache.acquire("a.bin", 0, file) == OpenResult::ok);
    cache.release(file);
    fs::remove(folder.root / "a.bin");
    fs::create_symlink(folder.base / "secret.txt", folder.root / "a.bin");
    CHECK(cache.acquire("a.bin", 1'500, file) == OpenResult::forbidden);
}

TEST_CASE("the least recently used files leave when the cache is full, unless in use") {
    Folder folder;
    for (const char* name : {"a", "b", "c"}) folder.write(name, name);
    FileCache cache(folder.root_fd, folder.types, 2, 60'000);
    OpenFile* a = nullptr;
    OpenFile* b = nullptr;
    OpenFile* c = nullptr;
    REQUIRE(cache.acquire("a", 0, a) == OpenResult::ok);  // held: must survive
    REQUIRE(cache.acquire("b", 0, b) == OpenResult::ok);
    cache.release(b);
    REQUIRE(cache.acquire("c", 0, c) == OpenResult::ok);  // evicts b, not a
    cache.release(c);
    CHECK(a->fd >= 0);
    CHECK(fcntl(a->fd, F_GETFD) != -1);
    cache.release(a);
}

TEST_CASE("what is not a regular file beneath the root is refused") {
    Folder folder;
    folder.write("inside.txt", "in");
    fs::create_symlink("inside.txt", folder.root / "relative-link");
    fs::create_symlink("../secret.txt", folder.root / "escaping-link");
    fs::create_symlink(folder.base / "secret.txt", folder.root / "absolute-link");
    FileCache cache(folder.root_fd, folder.types, 10, 60'000);
    OpenFile* file = nullptr;
    REQUIRE(cache.acquire("relative-link", 0, file) == OpenResult::ok);
    cache.release(file);
    CHECK(cache.acquire("escaping-link", 0, file) == OpenResult::forbidden);
    CHECK(cache.acquire("absolute-link", 0, file) == OpenResult::forbidden);
    CHECK(cache.acquire("missing", 0, file) == OpenResult::not_found);
    CHECK(cache.acquire("inside.txt/", 0, file) == OpenResult::not_found);
    CHECK(cache.acquire("sub", 0, file) == OpenResult::is_directory);
    CHECK(cache.acquire("", 0, file) == OpenResult::is_directory);
}

TEST_CASE("a shared cache key names the path and the version of the file") {
    const std::string etag = make_etag(4096, 1'700'000'000'123'456'789);
    CHECK(shared_cache_key("dir/file.bin", etag) == "f:dir/file.bin:1000-17979cfe3d85cd15");
    // Another size or mtime is another key.
    CHECK(shared_cache_key("dir/file.bin", make_etag(4097, 1)) != shared_cache_key("dir/file.bin", make_etag(4096, 1)));
    CHECK(shared_cache_key("dir/file.bin", make_etag(4096, 2)) != shared_cache_key("dir/file.bin", make_etag(4096, 1)));
    // Bytes a memcached key cannot hold, or a long path: a fixed-length hash.
    const std::string spaced = shared_cache_key("a b.txt", etag);
    CHECK(spaced.rfind("f:#", 0) == 0);
    CHECK(spaced.find(' ') == std::string::npos);
    CHECK(spaced != shared_cache_key("a c.txt", etag));
    const std::string long_path(500, 'x');
    CHECK(shared_cache_key(long_path, etag).size() < 100);
    CHECK(shared_cache_key("caf\xc3\xa9", etag).rfind("f:#", 0) == 0);
}
