#include "privileges.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "log.hpp"

namespace smp {
namespace {

void hand_over(const std::filesystem::path& path, const Identity& identity) {
    if (lchown(path.c_str(), identity.uid, identity.gid) != 0)
        throw std::runtime_error("state_dir: cannot give " + path.string() + " to user '" + identity.name +
                                 "': " + std::strerror(errno));
}

}  // namespace

std::optional<Identity> resolve_user(const Config& config) {
    if (config.user.empty()) return std::nullopt;
    std::vector<char> buffer(16384);
    passwd entry{};
    passwd* found = nullptr;
    const int error = getpwnam_r(config.user.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (found == nullptr) {
        ErrorList errors(config.path);
        errors.add_line(config.user_line, "user",
                        "no such account '" + config.user + "'" +
                            (error != 0 ? std::string(" (") + std::strerror(error) + ")" : std::string()));
        throw ConfigErrors(errors.take());
    }
    Identity identity{config.user, entry.pw_uid, entry.pw_gid};
    if (geteuid() != 0) {
        if (geteuid() != identity.uid)
            spdlog::warn("user: '{}' ignored: the server was not started as root, it runs as uid {}", config.user,
                         geteuid());
        return std::nullopt;
    }
    return identity;
}

void drop_privileges(const Identity& identity) {
    if (initgroups(identity.name.c_str(), identity.gid) != 0)
        throw std::system_error(errno, std::generic_category(), "initgroups for user '" + identity.name + "'");
    if (setgid(identity.gid) != 0)
        throw std::system_error(errno, std::generic_category(), "setgid to group " + std::to_string(identity.gid));
    if (setuid(identity.uid) != 0)
        throw std::system_error(errno, std::generic_category(), "setuid to user '" + identity.name + "'");
    // A process that could take root back has not dropped anything.
    if (identity.uid != 0 && setuid(0) == 0)
        throw std::system_error(EPERM, std::generic_category(), "root could be regained after setuid");
}

void give_state_dir(const std::string& dir, const Identity& identity) {
    std::error_code error;
    std::filesystem::create_directories(dir, error);
    if (error) throw std::runtime_error("state_dir: cannot create " + dir + ": " + error.message());
    hand_over(dir, identity);
    // Only what root owns is handed over: a file the administrator gave to
    // someone else on purpose keeps its owner.
    using std::filesystem::directory_options;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, directory_options::none, error);
         !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
        struct stat status {};
        if (lstat(it->path().c_str(), &status) == 0 && status.st_uid == 0) hand_over(it->path(), identity);
    }
    if (error) throw std::runtime_error("state_dir: cannot read " + dir + ": " + error.message());
}

void give_log_files(const LogConfig& log, const Identity& identity) {
    for (const std::string* path : {&log.file, &log.access_log}) {
        if (path->empty()) continue;
        const int fd = open(path->c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 || fchown(fd, identity.uid, identity.gid) != 0)
            spdlog::warn("cannot give {} to user '{}': {}", *path, identity.name, std::strerror(errno));
        if (fd >= 0) close(fd);
    }
}

}  // namespace smp
