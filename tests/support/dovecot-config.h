// Dovecot configuration as the tests write it, in the syntax of the installed
// Dovecot (2.3 or 2.4): what any test machine needs (paths in a temporary
// directory, test users from a password file, maildir, IMAP and LMTP on
// loopback ports) and the xaps settings. DovecotInstance (in place of
// dovecot-core's configuration, before the package's shipped files) and the
// package test's InstalledDovecot (added to the installed configuration) both
// write theirs with it.
#pragma once

#include "test-users.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xaps::test {

// A Dovecot version; the installed one from `dovecot --version` (read once).
// A test that hands in configuration text (extra_config, userdb_fields) picks
// its syntax with it too.
struct DovecotVersion {
    int major = 0;
    int minor = 0;
    bool at_least(int want_major, int want_minor) const {
        return major > want_major || (major == want_major && minor >= want_minor);
    }
};
const DovecotVersion &installed_dovecot_version();

// A setting's value in Dovecot 2.4's syntax: in double quotes, taken as it is
// (%{variables} expanded).
std::string config_2_4_quoted(const std::string &value);

// A Dovecot that serves test users from a temporary directory.
struct TestMachine {
    // Holds the password file `users`, and state/, mail/ and home/.
    std::string dir;
    std::string base_dir;
    std::string log_path;
    std::string instance_name;
    // Owns the mail; every user's mail processes run as it, unless the user
    // has an account of its own in user_accounts.
    SystemUser mail_user;
    std::vector<std::string> users;
    // Users that are system users of their own, as with Debian's stock
    // passwd userdb: a passwd-file userdb gives each its uid, gid and home,
    // and their mail processes run as that uid. Empty: the static userdb
    // (one virtual mail uid for everybody).
    std::map<std::string, SystemUser> user_accounts;
    std::string password;
    std::uint16_t imap_port = 0;
    std::uint16_t lmtp_port = 0;
    // Extra static userdb fields, "key=value key=value" as the 2.3 userdb's
    // args take them (Dovecot's %variables are expanded).
    std::string userdb_fields;
    // The LMTP unix_listener's mode; empty leaves the listener as it is.
    std::string lmtp_socket_mode;
    // Written after an installed configuration, whose conf.d sends the info
    // and debug logs elsewhere and (2.4) names its own mail home and INBOX:
    // those are set back to the machine's too.
    bool after_installed_config = false;
};

// The settings that make `machine` (no header, no dovecot_config_version).
// Throws xaps::Error for userdb_fields that are not key=value.
std::string test_machine_config(const TestMachine &machine,
                                const DovecotVersion &syntax = installed_dovecot_version());
// Creates base_dir, state/, mail/ and home/ and the password file. mail/
// and home/ are the mail user's, or, with user_accounts, root's with a
// directory per user owned by that user.
void prepare_test_machine(const TestMachine &machine);

// The xaps_* settings: in plugin { } on 2.3, global (declared by the xaps
// settings module) on 2.4.
std::string xaps_settings_config(const std::map<std::string, std::string> &settings,
                                 const DovecotVersion &syntax = installed_dovecot_version());

} // namespace xaps::test
