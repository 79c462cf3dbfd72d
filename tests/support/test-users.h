// The system users an end-to-end test needs: `vmail` owns the test mail and
// `xaps` runs the worker, as in a real installation. Tests run as root.
#pragma once

#include <string>
#include <sys/types.h>

namespace xaps::test {

inline constexpr const char *mail_user_name = "vmail";
inline constexpr const char *worker_user_name = "xaps";

struct SystemUser {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
};

// The user, created first as a system user without a home (useradd --system)
// when it does not exist. Throws xaps::Error when that fails.
SystemUser ensure_system_user(const std::string &name);
// The user, which must exist (an installed package created it). Throws
// xaps::Error otherwise.
SystemUser existing_system_user(const std::string &name);

} // namespace xaps::test
