#include "privileges.hpp"

#include <doctest/doctest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

using smp::parse_config;

namespace {

smp::Config config_with_user(const std::string& user) {
    return parse_config("user: " + user + "\nprotocols:\n  - {module: http_download, host: 127.0.0.1, port: 1}\n",
                        "test.yaml", "");
}

}  // namespace

TEST_CASE("no user: the children keep the master's identity") {
    auto config = config_with_user("nobody");
    config.user.clear();
    CHECK_FALSE(smp::resolve_user(config).has_value());
}

TEST_CASE("an unknown user names the key and the line") {
    try {
        smp::resolve_user(config_with_user("no-such-user-smp"));
        FAIL("no error");
    } catch (const smp::ConfigErrors& e) {
        CHECK(std::string(e.what()) == "test.yaml:1: user: no such account 'no-such-user-smp'\n");
    }
}

TEST_CASE("as root, a worker becomes the user and cannot become root again") {
    if (geteuid() != 0 || getpwnam("nobody") == nullptr) return;  // needs root and Debian's nobody
    const auto identity = smp::resolve_user(config_with_user("nobody"));
    REQUIRE(identity.has_value());
    const pid_t child = fork();
    if (child == 0) {
        try {
            smp::drop_privileges(*identity);
        } catch (...) {
            _exit(2);
        }
        _exit(getuid() == identity->uid && geteuid() == identity->uid && getgid() == identity->gid && setuid(0) != 0
                  ? 0
                  : 1);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("as root, the state directory and what root made in it go to the user") {
    if (geteuid() != 0 || getpwnam("nobody") == nullptr) return;
    const auto identity = smp::resolve_user(config_with_user("nobody"));
    REQUIRE(identity.has_value());
    char pattern[] = "/tmp/smp-privileges-XXXXXX";
    REQUIRE(mkdtemp(pattern) != nullptr);
    const std::filesystem::path dir = std::string(pattern) + "/state";
    std::filesystem::create_directories(dir / "spool");
    std::ofstream(dir / "stats.db") << "x";
    std::ofstream(dir / "kept") << "x";
    REQUIRE(chown((dir / "kept").c_str(), 1, 1) == 0);
    smp::give_state_dir(dir.string(), *identity);
    struct stat status {};
    for (const char* name : {"", "spool", "stats.db"}) {
        REQUIRE(stat((dir / name).c_str(), &status) == 0);
        CHECK(status.st_uid == identity->uid);
    }
    REQUIRE(stat((dir / "kept").c_str(), &status) == 0);
    CHECK(status.st_uid == 1);
    std::filesystem::remove_all(pattern);
}
