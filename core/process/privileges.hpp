// Started as root without systemd, the server binds its ports as root and
// runs its workers and stats collector as the `user:` of the config, as
// nginx does. The master keeps root so that a reload can bind a new
// privileged port and read a configuration only root may read.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "config.hpp"

namespace smp {

struct Identity {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
};

// The account `config.user` names, when the children must switch to it:
// nullopt when no user is configured, or when the process is not root
// (under systemd's User= or DynamicUser= it already runs unprivileged; a
// different user is then logged as ignored). Throws ConfigErrors naming
// the key and line when the account does not exist.
std::optional<Identity> resolve_user(const Config& config);

// Becomes `identity` for good: supplementary groups, group, then user.
// Throws std::system_error when any step fails or root could be regained.
void drop_privileges(const Identity& identity);

// Creates `dir` when missing and hands it, and what root created in it (the
// default store's database, the spool), to `identity`, so that the stats
// collector can write there. Symbolic links are not followed. Throws
// std::runtime_error naming the path.
void give_state_dir(const std::string& dir, const Identity& identity);

// Creates log.file and log.access_log when missing and hands them to
// `identity`, so that the children can open them again on SIGUSR1 after
// logrotate moved them. A failure is logged: logging goes on as it can.
void give_log_files(const LogConfig& log, const Identity& identity);

}  // namespace smp
