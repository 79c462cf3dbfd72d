// A PostgreSQL server of its own for a test: initdb into a fresh temporary
// directory, postgres listening only on a unix socket in that directory,
// trust authentication, role and database `xaps`. Run as the `postgres`
// system user when the test runs as root (initdb refuses root). The directory
// is 0755 and postgres makes its socket 0777, so processes of other local
// users (the xaps worker runs as its own user) can connect.
//
// Header only, so that any test target can use it without linking anything.
// The server is a child of the test process and dies with the thread that
// started it (PR_SET_PDEATHSIG): a test killed by its timeout leaves no
// postgres behind. Start it from the test's main thread.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace xaps::test {

class PostgresServer {
public:
    // True when a PostgreSQL server (Debian's postgresql package) is installed.
    static bool available() { return !find_bin_dir().empty(); }

    // initdb, start, and wait (60 s at most) until the database `xaps`
    // accepts connections. Throws std::runtime_error with postgres's output
    // when it does not.
    PostgresServer() : bin_dir_(find_bin_dir()) {
        if (bin_dir_.empty()) {
            throw std::runtime_error("PostgreSQL is not installed (/usr/lib/postgresql/*/bin)");
        }
        char pattern[] = "/tmp/xaps-pg-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) {
            throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
        }
        dir_ = pattern;
        try {
            set_up();
        } catch (...) {
            discard();
            throw;
        }
    }
    // Stops the server (fast shutdown: connected clients are cut off; SIGKILL
    // after a deadline) and removes its directory, unless
    // XAPS_KEEP_TEST_DIRS=1 asks to keep it.
    ~PostgresServer() { discard(); }
    PostgresServer(const PostgresServer &) = delete;
    PostgresServer &operator=(const PostgresServer &) = delete;

    // A libpq connection string for the database `xaps` as role `xaps`.
    std::string conninfo() const {
        return "host=" + dir_ + " port=" + std::to_string(port) + " dbname=xaps user=xaps";
    }
    std::string data_dir() const { return dir_ + "/data"; }
    // The directory holding the socket, the data directory and postgres.log.
    std::string dir() const { return dir_; }
    std::string log_path() const { return dir_ + "/postgres.log"; }
    std::string log() const { return read_file(log_path()); }
    bool running() const { return postmaster_ > 0; }

    // A crash: SIGKILL the postmaster and every process it started, and wait
    // until they are all gone, so that start() can run on the same data
    // directory. Committed transactions survive (WAL replay at start()).
    void kill_hard() {
        if (postmaster_ <= 0) {
            return;
        }
        std::vector<pid_t> children = children_of(postmaster_);
        ::kill(postmaster_, SIGKILL);
        for (pid_t child : children) {
            ::kill(child, SIGKILL);
        }
        reap_postmaster();
        // The children were reparented; they are gone when /proc says so.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        for (pid_t child : children) {
            while (process_alive(child) && std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
    }

    // Starts the server again on the same data directory (after stop() or
    // kill_hard()) and waits until it accepts connections.
    void start() {
        if (postmaster_ > 0) {
            return;
        }
        launch_postmaster();
        wait_until_ready(std::chrono::seconds(60));
    }

    // A clean shutdown (fast mode: open sessions are ended).
    void stop() {
        if (postmaster_ <= 0) {
            return;
        }
        ::kill(postmaster_, SIGINT);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            pid_t done = ::waitpid(postmaster_, &status, WNOHANG);
            if (done == postmaster_ || (done < 0 && errno == ECHILD)) {
                postmaster_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        kill_hard();
    }

    // The socket file's name is .s.PGSQL.<port> in dir(); nothing listens on
    // TCP, so every server can use the same number.
    static constexpr int port = 5432;

private:
    static std::string find_bin_dir() {
        std::error_code error;
        std::string best;
        int best_version = -1;
        for (const auto &entry :
             std::filesystem::directory_iterator("/usr/lib/postgresql", error)) {
            const std::string name = entry.path().filename().string();
            const int version = std::atoi(name.c_str());
            const std::string bin = entry.path().string() + "/bin";
            if (version > best_version && ::access((bin + "/initdb").c_str(), X_OK) == 0 &&
                ::access((bin + "/postgres").c_str(), X_OK) == 0) {
                best_version = version;
                best = bin;
            }
        }
        return best;
    }

    static std::string read_file(const std::string &path) {
        std::ifstream in(path);
        std::stringstream text;
        text << in.rdbuf();
        return text.str();
    }

    static bool process_alive(pid_t pid) {
        std::ifstream status("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("State:", 0) == 0) {
                return line.find('Z') == std::string::npos;
            }
        }
        return false;
    }

    static std::vector<pid_t> children_of(pid_t parent) {
        std::vector<pid_t> children;
        DIR *proc = ::opendir("/proc");
        if (proc == nullptr) {
            return children;
        }
        while (dirent *entry = ::readdir(proc)) {
            const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
            if (pid <= 0) {
                continue;
            }
            std::ifstream status(std::string("/proc/") + entry->d_name + "/status");
            std::string line;
            while (std::getline(status, line)) {
                if (line.rfind("PPid:", 0) == 0) {
                    if (std::atoi(line.c_str() + 5) == parent) {
                        children.push_back(pid);
                    }
                    break;
                }
            }
        }
        ::closedir(proc);
        return children;
    }

    void set_up() {
        if (::chmod(dir_.c_str(), 0755) != 0) {
            throw std::runtime_error("chmod " + dir_ + ": " + std::strerror(errno));
        }
        if (::geteuid() == 0) {
            const passwd *account = ::getpwnam("postgres");
            if (account == nullptr) {
                throw std::runtime_error("running as root needs the system user postgres");
            }
            run_as_ = std::pair{account->pw_uid, account->pw_gid};
            if (::chown(dir_.c_str(), account->pw_uid, account->pw_gid) != 0) {
                throw std::runtime_error("chown " + dir_ + ": " + std::strerror(errno));
            }
        }
        // --no-sync: only initdb's own files; the server itself runs with
        // PostgreSQL's durable defaults (fsync, synchronous_commit on).
        run_to_end({bin_dir_ + "/initdb", "-D", data_dir(), "-U", "xaps", "--auth=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"},
                   "initdb");
        launch_postmaster();
        wait_until_ready(std::chrono::seconds(60));
        run_to_end(
            {bin_dir_ + "/createdb", "-h", dir_, "-p", std::to_string(port), "-U", "xaps", "xaps"},
            "createdb");
    }

    // fork + exec with stdout and stderr appended to postgres.log, as the
    // postgres user when we are root.
    pid_t spawn(const std::vector<std::string> &argv, bool die_with_parent) {
        std::vector<char *> args;
        for (const std::string &arg : argv) {
            args.push_back(const_cast<char *>(arg.c_str()));
        }
        args.push_back(nullptr);
        // PostgreSQL is not under test: the sanitizer build's e2e suites
        // preload libasan into whatever they start, and initdb hangs under it.
        std::vector<std::string> environment;
        for (char **entry = environ; *entry != nullptr; ++entry) {
            if (!std::string_view(*entry).starts_with("LD_PRELOAD=")) {
                environment.emplace_back(*entry);
            }
        }
        std::vector<char *> envp;
        for (std::string &entry : environment) {
            envp.push_back(entry.data());
        }
        envp.push_back(nullptr);
        const std::string log_file = log_path();
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) {
            throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        }
        if (pid == 0) {
            if (die_with_parent) {
                ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (::getppid() != parent) {
                    ::_exit(127);
                }
            }
            ::setsid();
            const int null_fd = ::open("/dev/null", O_RDONLY);
            const int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (null_fd < 0 || log_fd < 0) {
                ::_exit(127);
            }
            ::dup2(null_fd, 0);
            ::dup2(log_fd, 1);
            ::dup2(log_fd, 2);
            if (run_as_) {
                if (::fchown(log_fd, run_as_->first, run_as_->second) != 0 ||
                    ::setgroups(0, nullptr) != 0 || ::setgid(run_as_->second) != 0 ||
                    ::setuid(run_as_->first) != 0) {
                    ::_exit(127);
                }
            }
            if (::chdir(dir_.c_str()) != 0) {
                ::_exit(127);
            }
            ::execve(args[0], args.data(), envp.data());
            ::_exit(127);
        }
        return pid;
    }

    void run_to_end(const std::vector<std::string> &argv, const char *what) {
        const pid_t pid = spawn(argv, true);
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            throw std::runtime_error(std::string(what) + " failed:\n" + log());
        }
    }

    void launch_postmaster() {
        postmaster_ = spawn({bin_dir_ + "/postgres", "-D", data_dir(), "-k", dir_, "-p",
                             std::to_string(port), "-c", "listen_addresses=", "-c",
                             "unix_socket_permissions=0777", "-c", "max_connections=50", "-c",
                             "shared_buffers=16MB", "-c", "dynamic_shared_memory_type=mmap"},
                            true);
    }

    // postmaster.pid's 8th line says "ready" once connections are accepted;
    // its first line tells ours from the one a killed postmaster left.
    void wait_until_ready(std::chrono::seconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(postmaster_, &status, WNOHANG) == postmaster_) {
                postmaster_ = -1;
                throw std::runtime_error("postgres exited at start:\n" + log());
            }
            std::istringstream pid_file(read_file(data_dir() + "/postmaster.pid"));
            std::string owner;
            std::getline(pid_file, owner);
            std::string line;
            for (int i = 1; i < 8 && std::getline(pid_file, line); ++i) {
            }
            if (owner == std::to_string(postmaster_) && line.rfind("ready", 0) == 0) {
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        kill_hard();
        throw std::runtime_error("postgres not ready within the deadline:\n" + log());
    }

    void reap_postmaster() {
        int status = 0;
        while (::waitpid(postmaster_, &status, 0) < 0 && errno == EINTR) {
        }
        postmaster_ = -1;
    }

    void discard() noexcept {
        try {
            stop();
        } catch (...) {
        }
        const char *keep = std::getenv("XAPS_KEEP_TEST_DIRS");
        if (keep == nullptr || std::string(keep) != "1") {
            std::error_code ignored;
            std::filesystem::remove_all(dir_, ignored);
        }
    }

    std::string bin_dir_;
    std::string dir_;
    std::optional<std::pair<uid_t, gid_t>> run_as_;
    pid_t postmaster_ = -1;
};

} // namespace xaps::test
