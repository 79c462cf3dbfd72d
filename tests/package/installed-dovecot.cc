#include "installed-dovecot.h"
#include "test-files.h"

#include "dovecot-instance.h"
#include "free-ports.h"
#include "xaps-error.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <pwd.h>
#include <regex>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;

namespace xaps::test {

namespace {

using Clock = std::chrono::steady_clock;

// The package's conffile: the copy of it must run exactly as installed.
constexpr const char *package_conffile = "95-xaps.conf";
constexpr auto start_timeout = std::chrono::seconds(20);
constexpr auto doveadm_time_limit = std::chrono::seconds(60);

struct UnixUser {
    uid_t uid = 0;
    gid_t gid = 0;
};

UnixUser unix_user(const std::string &name) {
    passwd entry{};
    passwd *found = nullptr;
    std::vector<char> buffer(16384);
    if (::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
        throw Error(ErrorKind::config, "no Unix user '" + name + "' on this machine");
    }
    return {entry.pw_uid, entry.pw_gid};
}

void make_directory(const std::string &path, mode_t mode, const UnixUser &owner) {
    fs::create_directories(path);
    if (::chmod(path.c_str(), mode) < 0 || ::chown(path.c_str(), owner.uid, owner.gid) < 0) {
        throw Error(ErrorKind::internal, "cannot set up " + path + ": " + std::strerror(errno));
    }
}

// Rewrites the lines of `path` for which `comment_out` returns a reason as
// comments that give the reason.
void comment_out_lines(const fs::path &path,
                       const std::function<std::string(const std::string &)> &comment_out) {
    std::istringstream lines(read_file(path));
    std::string rewritten;
    bool changed = false;
    for (std::string line; std::getline(lines, line);) {
        const std::string reason = comment_out(line);
        if (!reason.empty()) {
            rewritten += "# xaps package test, " + reason + ":\n#" + line + "\n";
            changed = true;
        } else {
            rewritten += line + "\n";
        }
    }
    if (changed) {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << rewritten;
    }
}

} // namespace

InstalledDovecot::InstalledDovecot() : dir_("xaps-package-test-"), process_(conf_path(), dir()) {
    auto ports = find_free_tcp_ports(2);
    imap_port_ = ports[0];
    lmtp_port_ = ports[1];
    copy_installed_config();
}

void InstalledDovecot::copy_installed_config() {
    fs::copy(installed_config_dir, config_dir(),
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);

    // The test users come from a password file: the system's passdb (PAM)
    // and userdb know nobody called alice.
    const std::regex auth_include(R"(^\s*!include(_try)?\s+auth-\S+\.conf\.ext\s*$)");
    comment_out_lines(config_dir() + "/conf.d/10-auth.conf", [&](const std::string &line) {
        return std::regex_match(line, auth_include) ? std::string("test users instead") : "";
    });

    // Dovecot reads "setting = <file" values even for what is switched off
    // (ssl = no): a machine without the snakeoil certificate, like a fresh
    // container, cannot start the stock configuration otherwise.
    const std::regex file_value(R"(^\s*\w+\s*=\s*<\s*(\S+)\s*$)");
    for (const auto &entry : fs::recursive_directory_iterator(config_dir())) {
        const fs::path &path = entry.path();
        if (!entry.is_regular_file() || path.extension() != ".conf" ||
            path.filename() == package_conffile) {
            continue;
        }
        comment_out_lines(path, [&](const std::string &line) {
            std::smatch match;
            if (!std::regex_match(line, match, file_value)) {
                return std::string();
            }
            fs::path file = match[1].str();
            if (file.is_relative()) {
                file = path.parent_path() / file;
            }
            return fs::exists(file) ? std::string() : "this machine has no " + file.string();
        });
    }
}

void InstalledDovecot::set_plugin_settings(std::map<std::string, std::string> settings) {
    plugin_settings_ = std::move(settings);
}

std::string InstalledDovecot::install_private_file(const std::string &from) {
    const std::string private_dir = dir() + "/private";
    make_directory(private_dir, 0700, UnixUser{0, 0});
    const std::string to = private_dir + "/" + fs::path(from).filename().string();
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    if (::chown(to.c_str(), 0, 0) < 0 || ::chmod(to.c_str(), 0600) < 0) {
        throw Error(ErrorKind::internal, "cannot make " + to + " root-only");
    }
    return to;
}

void InstalledDovecot::write_machine_config() const {
    const UnixUser mail = unix_user(mail_user_);
    const UnixUser worker = unix_user("xaps");
    const UnixUser root{0, 0};
    make_directory(base_dir(), 0755, root);
    make_directory(dir() + "/state", 0755, root);
    make_directory(dir() + "/mail", 0700, mail);
    make_directory(dir() + "/home", 0700, mail);
    // The registration store, owned like /var/lib/dovecot-xaps; a private
    // one, so that the test never touches the machine's registrations.
    make_directory(dir() + "/xaps-db", 0700, worker);

    std::string users_file;
    for (const auto &user : users_) {
        users_file += user + ":{PLAIN}" + password + "::::::\n";
    }
    write_file(dir() + "/users", users_file, 0644);

    const std::string uid = std::to_string(mail.uid);
    const std::string gid = std::to_string(mail.gid);
    const bool dovecot_2_4 = installed_dovecot_version().at_least(2, 4);
    std::ostringstream conf;
    conf << "# Written by the xaps package test: what a test machine needs, after the\n"
         << "# installed configuration.\n"
         << "base_dir = " << base_dir() << "\n"
         << "state_dir = " << dir() << "/state\n"
         << "instance_name = xaps-package-test-" << ::getpid() << "\n"
         << "log_path = " << log_path() << "\n"
         << "info_log_path = " << log_path() << "\n"
         << "debug_log_path = " << log_path() << "\n"
         << "protocols = imap lmtp\n"
         << "listen = 127.0.0.1\n"
         << "ssl = no\n"
         << "first_valid_uid = " << uid << "\n"
         << "postmaster_address = postmaster@example.com\n";
    if (dovecot_2_4) {
        conf << "auth_allow_cleartext = yes\n"
             // alice@example.com (an LMTP recipient) and alice are the same user.
             << "auth_username_format = %{user | username | lower}\n"
             << "mail_driver = maildir\n"
             << "mail_home = " << dir() << "/home/%{user}\n"
             << "mail_path = " << dir() << "/mail/%{user}\n"
             << "mail_inbox_path =\n"
             << "passdb passwd-file {\n"
             << "  passwd_file_path = " << dir() << "/users\n"
             << "}\n"
             << "userdb static {\n"
             << "  fields {\n"
             << "    uid = " << uid << "\n"
             << "    gid = " << gid << "\n"
             << "    home = " << dir() << "/home/%{user}\n"
             << "  }\n"
             << "}\n";
    } else {
        conf << "disable_plaintext_auth = no\n"
             << "auth_username_format = %Ln\n"
             << "mail_location = maildir:" << dir() << "/mail/%u\n"
             << "passdb {\n"
             << "  driver = passwd-file\n"
             << "  args = " << dir() << "/users\n"
             << "}\n"
             << "userdb {\n"
             << "  driver = static\n"
             << "  args = uid=" << uid << " gid=" << gid << " home=" << dir() << "/home/%u\n"
             << "}\n";
    }
    // 2.4 has no per-listener address: the global `listen` above applies.
    const std::string listener_address = dovecot_2_4 ? "" : "    address = 127.0.0.1\n";
    conf << "service imap-login {\n"
         << "  inet_listener imap {\n"
         << listener_address << "    port = " << imap_port_ << "\n"
         << "  }\n"
         << "  inet_listener imaps {\n"
         << "    port = 0\n"
         << "  }\n"
         << "}\n"
         << "service lmtp {\n"
         << "  inet_listener lmtp {\n"
         << listener_address << "    port = " << lmtp_port_ << "\n"
         << "  }\n"
         << "}\n";
    write_file(dir() + "/test-machine.conf", conf.str(), 0644);

    // Our settings: in plugin { } on 2.3, global (declared by the package's
    // settings module) on 2.4.
    std::map<std::string, std::string> settings = plugin_settings_;
    settings.emplace("xaps_db_path", dir() + "/xaps-db");
    std::ostringstream plugin;
    plugin << "# Written by the xaps package test: the store, credentials and the APNs endpoint.\n";
    if (dovecot_2_4) {
        for (const auto &[key, value] : settings) {
            plugin << key << " = " << config_2_4_quoted(value) << "\n";
        }
    } else {
        plugin << "plugin {\n";
        for (const auto &[key, value] : settings) {
            plugin << "  " << key << " = " << value << "\n";
        }
        plugin << "}\n";
    }
    write_file(dir() + "/test-plugin-settings.conf", plugin.str(), 0644);
}

void InstalledDovecot::start() {
    if (running()) {
        return;
    }
    write_machine_config();
    if (!includes_appended_) {
        std::ofstream(conf_path(), std::ios::binary | std::ios::app)
            << "\n# Appended by the xaps package test.\n"
            << "!include " << dir() << "/test-machine.conf\n"
            << "!include " << dir() << "/test-plugin-settings.conf\n";
        includes_appended_ = true;
    }
    process_.start({imap_port_, worker_socket_path(), start_timeout});
}

CommandResult InstalledDovecot::doveadm(const std::vector<std::string> &args) const {
    std::vector<std::string> argv{installed_doveadm, "-c", conf_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string out_path = dir() + "/doveadm.out";
    const std::string err_path = dir() + "/doveadm.err";
    fs::remove(out_path);
    fs::remove(err_path);
    const pid_t pid = spawn_process(argv, out_path, err_path);

    CommandResult result;
    const auto deadline = Clock::now() + doveadm_time_limit;
    int status = 0;
    for (;;) {
        pid_t done = ::waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            if (WIFEXITED(status)) {
                result.exit_code = WEXITSTATUS(status);
            }
            break;
        }
        if (done < 0 || Clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            break;
        }
        std::this_thread::sleep_for(Milliseconds(10));
    }
    result.out = read_file(out_path);
    result.err = read_file(err_path);
    return result;
}

} // namespace xaps::test
