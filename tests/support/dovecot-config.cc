#include "dovecot-config.h"
#include "test-files.h"

#include "xaps-error.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace xaps::test {

namespace {

constexpr const char *dovecot_binary = "/usr/sbin/dovecot";

// "2.3.19.1 (9b53102964)", "2.4.1-4 (7d8c0e5759)".
DovecotVersion parse_dovecot_version(const std::string &text) {
    DovecotVersion version;
    if (std::sscanf(text.c_str(), "%d.%d", &version.major, &version.minor) != 2) {
        throw Error(ErrorKind::internal, "cannot tell the Dovecot version from '" + text + "'");
    }
    return version;
}

DovecotVersion read_dovecot_version() {
    const std::string command = std::string(dovecot_binary) + " --version 2>&1";
    FILE *pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        throw Error(ErrorKind::internal, "cannot run " + command);
    }
    std::string output;
    char buffer[256];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
        output += buffer;
    }
    ::pclose(pipe);
    return parse_dovecot_version(output);
}

// 2.4 has no per-listener address: the global `listen` applies.
std::string listeners_config(const TestMachine &machine, const DovecotVersion &syntax) {
    const std::string address = syntax.at_least(2, 4) ? "" : "    address = 127.0.0.1\n";
    std::ostringstream conf;
    conf << "service imap-login {\n"
         << "  inet_listener imap {\n"
         << address << "    port = " << machine.imap_port << "\n"
         << "  }\n"
         << "  inet_listener imaps {\n"
         << "    port = 0\n"
         << "  }\n"
         << "}\n"
         << "service lmtp {\n"
         << "  inet_listener lmtp {\n"
         << address << "    port = " << machine.lmtp_port << "\n"
         << "  }\n";
    if (!machine.lmtp_socket_mode.empty()) {
        conf << "  unix_listener lmtp {\n"
             << "    mode = " << machine.lmtp_socket_mode << "\n"
             << "  }\n";
    }
    conf << "}\n";
    return conf.str();
}

std::string users_config_2_3(const TestMachine &machine) {
    const std::string &dir = machine.dir;
    std::ostringstream conf;
    conf << "disable_plaintext_auth = no\n"
         // alice@example.com (an LMTP recipient) and alice are the same user.
         << "auth_username_format = %Ln\n"
         << "mail_location = maildir:" << dir << "/mail/%u\n"
         << "passdb {\n"
         << "  driver = passwd-file\n"
         << "  args = " << dir << "/users\n"
         << "}\n"
         << "userdb {\n";
    if (machine.user_accounts.empty()) {
        conf << "  driver = static\n"
             << "  args = uid=" << machine.mail_user.uid << " gid=" << machine.mail_user.gid
             << " home=" << dir << "/home/%u"
             << (machine.userdb_fields.empty() ? "" : " " + machine.userdb_fields) << "\n";
    } else {
        // uid, gid and home come from the password file's lines.
        conf << "  driver = passwd-file\n"
             << "  args = " << dir << "/users\n";
        if (!machine.userdb_fields.empty()) {
            conf << "  default_fields = " << machine.userdb_fields << "\n";
        }
    }
    conf << "}\n";
    return conf.str();
}

std::string users_config_2_4(const TestMachine &machine) {
    const std::string &dir = machine.dir;
    std::ostringstream conf;
    conf << "auth_allow_cleartext = yes\n"
         // alice@example.com (an LMTP recipient) and alice are the same user.
         << "auth_username_format = %{user | username | lower}\n"
         << "mail_driver = maildir\n";
    if (machine.after_installed_config) {
        conf << "mail_home = " << dir << "/home/%{user}\n";
    }
    conf << "mail_path = " << dir << "/mail/%{user}\n";
    if (machine.after_installed_config) {
        conf << "mail_inbox_path =\n";
    }
    conf << "passdb passwd-file {\n"
         << "  passwd_file_path = " << dir << "/users\n"
         << "}\n"
         << "userdb " << (machine.user_accounts.empty() ? "static" : "passwd-file") << " {\n";
    if (machine.user_accounts.empty()) {
        conf << "  fields {\n"
             << "    uid = " << machine.mail_user.uid << "\n"
             << "    gid = " << machine.mail_user.gid << "\n"
             << "    home = " << dir << "/home/%{user}\n";
    } else {
        // uid, gid and home come from the password file's lines.
        conf << "  passwd_file_path = " << dir << "/users\n"
             << "  fields {\n";
    }
    // "key=value key=value", as the 2.3 static userdb's args take them.
    std::istringstream fields(machine.userdb_fields);
    for (std::string field; fields >> field;) {
        const auto equals = field.find('=');
        if (equals == std::string::npos || equals == 0) {
            throw Error(ErrorKind::config, "userdb_fields: '" + field + "' is not key=value");
        }
        conf << "    " << field.substr(0, equals) << " = "
             << config_2_4_quoted(field.substr(equals + 1)) << "\n";
    }
    conf << "  }\n"
         << "}\n";
    return conf.str();
}

// System users get uids counting down from 999, so the per-user accounts
// usually lie below the mail user's.
uid_t lowest_uid(const TestMachine &machine) {
    uid_t lowest = machine.mail_user.uid;
    for (const auto &[user, account] : machine.user_accounts) {
        lowest = std::min(lowest, account.uid);
    }
    return lowest;
}

} // namespace

const DovecotVersion &installed_dovecot_version() {
    static const DovecotVersion version = read_dovecot_version();
    return version;
}

// Dovecot 2.4 takes a value in double quotes as it is, %{variables} expanded.
std::string config_2_4_quoted(const std::string &value) {
    std::string out = "\"";
    for (char c : value) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out + "\"";
}

std::string test_machine_config(const TestMachine &machine, const DovecotVersion &syntax) {
    std::ostringstream conf;
    conf << "base_dir = " << machine.base_dir << "\n"
         << "state_dir = " << machine.dir << "/state\n"
         << "log_path = " << machine.log_path << "\n";
    if (machine.after_installed_config) {
        conf << "info_log_path = " << machine.log_path << "\n"
             << "debug_log_path = " << machine.log_path << "\n";
    }
    conf << "instance_name = " << machine.instance_name << "\n"
         << "protocols = imap lmtp\n"
         << "listen = 127.0.0.1\n"
         << "ssl = no\n"
         << "first_valid_uid = " << lowest_uid(machine) << "\n"
         << "postmaster_address = postmaster@example.com\n"
         << (syntax.at_least(2, 4) ? users_config_2_4(machine) : users_config_2_3(machine))
         << listeners_config(machine, syntax);
    return conf.str();
}

void prepare_test_machine(const TestMachine &machine) {
    make_directory(machine.base_dir, 0755);
    make_directory(machine.dir + "/state", 0755);
    std::string users_file;
    if (machine.user_accounts.empty()) {
        make_directory(machine.dir + "/mail", 0700, &machine.mail_user);
        make_directory(machine.dir + "/home", 0700, &machine.mail_user);
        for (const auto &user : machine.users) {
            // Dovecot creates no home by itself, and the LDA keeps state there.
            make_directory(machine.dir + "/home/" + user, 0700, &machine.mail_user);
            users_file += user + ":{PLAIN}" + machine.password + "::::::\n";
        }
    } else {
        make_directory(machine.dir + "/mail", 0755);
        make_directory(machine.dir + "/home", 0755);
        for (const auto &user : machine.users) {
            const auto account = machine.user_accounts.find(user);
            const SystemUser &owner =
                account == machine.user_accounts.end() ? machine.mail_user : account->second;
            const std::string home = machine.dir + "/home/" + user;
            make_directory(machine.dir + "/mail/" + user, 0700, &owner);
            make_directory(home, 0700, &owner);
            users_file += user + ":{PLAIN}" + machine.password + ":" + std::to_string(owner.uid) +
                          ":" + std::to_string(owner.gid) + "::" + home + "::\n";
        }
    }
    write_file(machine.dir + "/users", users_file, 0644);
}

std::string xaps_settings_config(const std::map<std::string, std::string> &settings,
                                 const DovecotVersion &syntax) {
    std::ostringstream conf;
    if (syntax.at_least(2, 4)) {
        for (const auto &[key, value] : settings) {
            conf << key << " = " << config_2_4_quoted(value) << "\n";
        }
        return conf.str();
    }
    conf << "plugin {\n";
    for (const auto &[key, value] : settings) {
        conf << "  " << key << " = " << value << "\n";
    }
    conf << "}\n";
    return conf.str();
}

} // namespace xaps::test
