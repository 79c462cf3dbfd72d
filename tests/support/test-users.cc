#include "test-users.h"

#include "xaps-error.h"

#include <optional>
#include <pwd.h>
#include <spawn.h>
#include <sys/wait.h>
#include <vector>

extern char **environ;

namespace xaps::test {

namespace {

std::optional<SystemUser> find_user(const std::string &name) {
    passwd entry{};
    passwd *found = nullptr;
    std::vector<char> buffer(16384);
    if (::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
        return std::nullopt;
    }
    return SystemUser{name, entry.pw_uid, entry.pw_gid};
}

// Exit status of the command, or -1 if it could not run.
int run(std::vector<std::string> argv) {
    std::vector<char *> args;
    for (auto &arg : argv) {
        args.push_back(arg.data());
    }
    args.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) {
        return -1;
    }
    int status = 0;
    if (::waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
        return -1;
    }
    return WEXITSTATUS(status);
}

} // namespace

SystemUser existing_system_user(const std::string &name) {
    if (auto user = find_user(name)) {
        return *user;
    }
    throw Error(ErrorKind::config, "no Unix user '" + name + "' on this machine");
}

SystemUser ensure_system_user(const std::string &name) {
    if (auto user = find_user(name)) {
        return *user;
    }
    int status = run({"useradd", "--system", "--no-create-home", "--user-group", "--home-dir",
                      "/nonexistent", "--shell", "/usr/sbin/nologin", name});
    // Another test process may have created it in between (useradd then fails): look again.
    if (auto user = find_user(name)) {
        return *user;
    }
    throw Error(ErrorKind::config, "cannot create the system user '" + name +
                                       "' (useradd exit status " + std::to_string(status) +
                                       "); end-to-end tests must run as root");
}

} // namespace xaps::test
