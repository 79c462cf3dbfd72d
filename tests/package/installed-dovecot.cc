#include "installed-dovecot.h"

#include "free-ports.h"
#include "worker-client.h"
#include "xaps-error.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <pwd.h>
#include <regex>
#include <sstream>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;

namespace xaps::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char *dovecot_binary = "/usr/sbin/dovecot";
// The package's conffile: the copy of it must run exactly as installed.
constexpr const char *package_conffile = "95-xaps.conf";
constexpr auto start_timeout = std::chrono::seconds(20);
constexpr auto stop_timeout = std::chrono::seconds(20);
constexpr auto doveadm_time_limit = std::chrono::seconds(60);

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file(const std::string &path, const std::string &content, mode_t mode) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out || ::chmod(path.c_str(), mode) < 0) {
        throw Error(ErrorKind::internal, "cannot write " + path);
    }
}

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

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) {
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        return std::string("was killed by signal ") + ::strsignal(WTERMSIG(status));
    }
    return "stopped";
}

bool is_socket(const std::string &path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// The value of a "Name:\t..." line of /proc/<pid>/status.
std::string proc_status_field(const std::string &status, const std::string &name) {
    std::istringstream lines(status);
    for (std::string line; std::getline(lines, line);) {
        if (line.starts_with(name + ":")) {
            return line.substr(name.size() + 1);
        }
    }
    return {};
}

// fork + exec with stdin from /dev/null and stdout/stderr into files; the
// child makes only async-signal-safe calls (the test may run threads).
pid_t spawn(const std::vector<std::string> &args, const std::string &out_path,
            const std::string &err_path) {
    std::vector<char *> argv;
    for (const auto &arg : args) {
        argv.push_back(const_cast<char *>(arg.c_str()));
    }
    argv.push_back(nullptr);
    const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
    int out_fd = ::open(out_path.c_str(), flags, 0644);
    int err_fd = err_path == out_path ? out_fd : ::open(err_path.c_str(), flags, 0644);
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out_fd < 0 || err_fd < 0 || null_fd < 0) {
        throw Error(ErrorKind::internal, "cannot open the output files of " + args[0]);
    }
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
        // A test that dies (or is killed by meson's timeout) takes it along.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::dup2(null_fd, STDIN_FILENO);
        ::dup2(out_fd, STDOUT_FILENO);
        ::dup2(err_fd, STDERR_FILENO);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(out_fd);
    if (err_fd != out_fd) {
        ::close(err_fd);
    }
    ::close(null_fd);
    if (pid < 0) {
        throw Error(ErrorKind::internal, std::string("fork: ") + std::strerror(errno));
    }
    return pid;
}

} // namespace

InstalledDovecot::InstalledDovecot() : dir_("xaps-package-test-") {
    auto ports = find_free_tcp_ports(2);
    imap_port_ = ports[0];
    lmtp_port_ = ports[1];
    copy_installed_config();
}

InstalledDovecot::~InstalledDovecot() {
    try {
        stop();
    } catch (...) {
        // A destructor must not throw; stop() already did what it could.
    }
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
         << "disable_plaintext_auth = no\n"
         // alice@example.com (an LMTP recipient) and alice are the same user.
         << "auth_username_format = %Ln\n"
         << "first_valid_uid = " << uid << "\n"
         << "mail_location = maildir:" << dir() << "/mail/%u\n"
         << "postmaster_address = postmaster@example.com\n"
         << "passdb {\n"
         << "  driver = passwd-file\n"
         << "  args = " << dir() << "/users\n"
         << "}\n"
         << "userdb {\n"
         << "  driver = static\n"
         << "  args = uid=" << uid << " gid=" << gid << " home=" << dir() << "/home/%u\n"
         << "}\n"
         << "service imap-login {\n"
         << "  inet_listener imap {\n"
         << "    address = 127.0.0.1\n"
         << "    port = " << imap_port_ << "\n"
         << "  }\n"
         << "  inet_listener imaps {\n"
         << "    port = 0\n"
         << "  }\n"
         << "}\n"
         << "service lmtp {\n"
         << "  inet_listener lmtp {\n"
         << "    address = 127.0.0.1\n"
         << "    port = " << lmtp_port_ << "\n"
         << "  }\n"
         << "}\n"
         << "plugin {\n"
         << "  xaps_db_path = " << dir() << "/xaps-db\n"
         << "}\n";
    write_file(dir() + "/test-machine.conf", conf.str(), 0644);

    std::ostringstream plugin;
    plugin << "# Written by the xaps package test: credentials and the APNs endpoint.\n"
           << "plugin {\n";
    for (const auto &[key, value] : plugin_settings_) {
        plugin << "  " << key << " = " << value << "\n";
    }
    plugin << "}\n";
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
    const std::string output_path = dir() + "/dovecot.out";
    master_pid_ = spawn({dovecot_binary, "-F", "-c", conf_path()}, output_path, output_path);
    wait_until_ready();
}

void InstalledDovecot::wait_until_ready() {
    const auto deadline = Clock::now() + start_timeout;
    auto still_waiting = [&](const std::string &what) {
        if (reap_master(false)) {
            fail_start("dovecot exited while waiting for " + what);
        }
        if (Clock::now() >= deadline) {
            fail_start("timed out waiting for " + what);
        }
        return true;
    };
    while (still_waiting("the IMAP port")) {
        try {
            LineConnection::connect_tcp("127.0.0.1", imap_port_, Milliseconds(200));
            break;
        } catch (const Error &) {
        }
    }
    // The master creates the listener at once; the handshake proves that the
    // worker process itself is up.
    std::string last_error = "no socket yet";
    while (still_waiting("the xaps worker (" + last_error + ")")) {
        if (!is_socket(worker_socket_path())) {
            std::this_thread::sleep_for(Milliseconds(20));
            continue;
        }
        try {
            WorkerClient probe(worker_socket_path(), Milliseconds(1000));
            return;
        } catch (const Error &error) {
            last_error = error.what();
            std::this_thread::sleep_for(Milliseconds(100));
        }
    }
}

void InstalledDovecot::fail_start(const std::string &reason) {
    stop();
    throw Error(ErrorKind::unavailable, "Dovecot did not start: " + reason +
                                            "\n--- dovecot output ---\n" + output() + "--- " +
                                            log_path() + " ---\n" + log());
}

bool InstalledDovecot::reap_master(bool wait) {
    if (master_pid_ <= 0) {
        return true;
    }
    int status = 0;
    pid_t done = ::waitpid(master_pid_, &status, wait ? 0 : WNOHANG);
    if (done == 0) {
        return false;
    }
    if (done == master_pid_) {
        std::ofstream(dir() + "/dovecot.out", std::ios::app)
            << "[test harness] dovecot master " << describe_wait_status(status) << "\n";
    }
    master_pid_ = -1;
    return true;
}

void InstalledDovecot::stop() {
    if (!running()) {
        return;
    }
    ::kill(master_pid_, SIGTERM);
    const auto deadline = Clock::now() + stop_timeout;
    while (!reap_master(false)) {
        if (Clock::now() >= deadline) {
            ::kill(master_pid_, SIGKILL);
            reap_master(true);
            break;
        }
        std::this_thread::sleep_for(Milliseconds(10));
    }
}

std::string InstalledDovecot::log() const {
    return read_file(log_path());
}

std::vector<std::string> InstalledDovecot::log_lines() const {
    std::vector<std::string> lines;
    std::istringstream text(log());
    for (std::string line; std::getline(text, line);) {
        lines.push_back(line);
    }
    return lines;
}

std::string InstalledDovecot::output() const {
    return read_file(dir() + "/dovecot.out");
}

std::optional<ServiceProcess>
InstalledDovecot::service_process(const std::string &executable) const {
    if (!running()) {
        return std::nullopt;
    }
    for (const auto &entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        const std::string status = read_file(entry.path() / "status");
        if (proc_status_field(status, "PPid") != "\t" + std::to_string(master_pid_)) {
            continue;
        }
        std::error_code error;
        const fs::path exe = fs::read_symlink(entry.path() / "exe", error);
        if (error || exe != executable) {
            continue;
        }
        ServiceProcess process;
        process.pid = std::stoi(name);
        process.executable = exe;
        std::istringstream uids(proc_status_field(status, "Uid"));
        for (uid_t uid; uids >> uid;) {
            process.uids.push_back(uid);
        }
        return process;
    }
    return std::nullopt;
}

CommandResult InstalledDovecot::doveadm(const std::vector<std::string> &args) const {
    std::vector<std::string> argv{installed_doveadm, "-c", conf_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string out_path = dir() + "/doveadm.out";
    const std::string err_path = dir() + "/doveadm.err";
    fs::remove(out_path);
    fs::remove(err_path);
    const pid_t pid = spawn(argv, out_path, err_path);

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
