#include "installed-dovecot.h"
#include "dovecot-config.h"
#include "test-files.h"

#include "free-ports.h"
#include "test-pki.h"
#include "xaps-error.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
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
constexpr auto command_time_limit = std::chrono::seconds(60);

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

std::map<std::string, std::string> InstalledDovecot::mock_apns_settings(std::uint16_t port) {
    return {
        {"xaps_apns_cert_file", install_private_file(test_pki_file("client.pem"))},
        {"xaps_apns_key_file", install_private_file(test_pki_file("client.key"))},
        {"xaps_apns_ca_file", test_pki_file("ca.pem")},
        {"xaps_apns_host", "127.0.0.1"},
        {"xaps_apns_port", std::to_string(port)},
    };
}

std::string InstalledDovecot::install_private_file(const std::string &from) {
    const std::string private_dir = dir() + "/private";
    make_directory(private_dir, 0700);
    const std::string to = private_dir + "/" + fs::path(from).filename().string();
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    if (::chown(to.c_str(), 0, 0) < 0 || ::chmod(to.c_str(), 0600) < 0) {
        throw Error(ErrorKind::internal, "cannot make " + to + " root-only");
    }
    return to;
}

std::string InstalledDovecot::install_private_text(const std::string &name,
                                                   const std::string &content) {
    const std::string private_dir = dir() + "/private";
    make_directory(private_dir, 0700);
    const std::string to = private_dir + "/" + name;
    write_file(to, content, 0600);
    if (::chown(to.c_str(), 0, 0) < 0) {
        throw Error(ErrorKind::internal, "cannot make " + to + " root-only");
    }
    return to;
}

void InstalledDovecot::write_machine_config() const {
    const SystemUser worker = existing_system_user("xaps");
    TestMachine machine;
    machine.dir = dir();
    machine.base_dir = base_dir();
    machine.log_path = log_path();
    machine.instance_name = "xaps-package-test-" + std::to_string(::getpid());
    machine.mail_user = existing_system_user(mail_user_);
    machine.users = users_;
    machine.password = password;
    machine.imap_port = imap_port_;
    machine.lmtp_port = lmtp_port_;
    machine.after_installed_config = true;
    prepare_test_machine(machine);
    // The registration store, owned like /var/lib/dovecot-xaps; a private
    // one, so that the test never touches the machine's registrations.
    make_directory(dir() + "/xaps-db", 0700, &worker);
    write_file(dir() + "/test-machine.conf",
               "# Written by the xaps package test: what a test machine needs, after the\n"
               "# installed configuration.\n" +
                   test_machine_config(machine),
               0644);

    std::map<std::string, std::string> settings = plugin_settings_;
    settings.emplace("xaps_db_path", dir() + "/xaps-db");
    write_file(dir() + "/test-plugin-settings.conf",
               "# Written by the xaps package test: the store, credentials and the APNs "
               "endpoint.\n" +
                   xaps_settings_config(settings) + raw_config_,
               0644);
}

void InstalledDovecot::start() {
    if (running()) {
        return;
    }
    write_machine_config();
    if (!includes_appended_) {
        append_test_includes();
    }
    process_.start({imap_port_, worker_socket_path(), start_timeout});
}

void InstalledDovecot::append_test_includes() {
    std::ofstream(conf_path(), std::ios::binary | std::ios::app)
        << "\n# Appended by the xaps package test.\n"
        << "!include " << dir() << "/test-machine.conf\n"
        << "!include " << dir() << "/test-plugin-settings.conf\n";
    includes_appended_ = true;
}

void InstalledDovecot::copy_installed_config_again() {
    fs::remove_all(config_dir());
    copy_installed_config();
    if (includes_appended_) {
        append_test_includes();
    }
}

CommandResult InstalledDovecot::doveadm(const std::vector<std::string> &args) const {
    std::vector<std::string> argv{installed_doveadm, "-c", conf_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

CommandResult InstalledDovecot::doveconf(const std::vector<std::string> &args) const {
    std::vector<std::string> argv{installed_doveconf, "-c", conf_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

std::vector<std::string> InstalledDovecot::log_errors() const {
    std::vector<std::string> errors;
    for (const auto &line : log_lines()) {
        for (const char *error : {"Error: ", "Fatal: ", "Panic: ", "killed with signal"}) {
            if (line.find(error) != std::string::npos) {
                errors.push_back(line);
                break;
            }
        }
    }
    return errors;
}

CommandResult InstalledDovecot::run(const std::vector<std::string> &argv) const {
    return run_command(argv, dir() + "/command.out", dir() + "/command.err", command_time_limit);
}

} // namespace xaps::test
