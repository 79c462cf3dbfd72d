#include "dovecot-process.h"
#include "test-files.h"

#include "worker-client.h"
#include "xaps-error.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
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
constexpr auto stop_timeout = std::chrono::seconds(20);

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

} // namespace

pid_t spawn_process(const std::vector<std::string> &args, const std::string &out_path,
                    const std::string &err_path) {
    // Everything the child needs is prepared before fork(): the test process
    // may have threads (the mock APNs server), so the child only makes
    // async-signal-safe calls before exec.
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

CommandResult run_command(const std::vector<std::string> &argv, const std::string &out_path,
                          const std::string &err_path, Milliseconds time_limit) {
    std::filesystem::remove(out_path);
    std::filesystem::remove(err_path);
    const pid_t pid = spawn_process(argv, out_path, err_path);
    CommandResult result;
    const auto deadline = std::chrono::steady_clock::now() + time_limit;
    int status = 0;
    for (;;) {
        const pid_t done = ::waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            if (WIFEXITED(status)) {
                result.exit_code = WEXITSTATUS(status);
            }
            break;
        }
        if (done < 0 || std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            break;
        }
        std::this_thread::sleep_for(Milliseconds(10));
    }
    result.out = read_file(out_path);
    result.err = err_path == out_path ? std::string() : read_file(err_path);
    return result;
}

DovecotProcess::DovecotProcess(std::string conf_path, const std::string &dir)
    : conf_path_(std::move(conf_path)), output_path_(dir + "/dovecot.out"),
      log_path_(dir + "/dovecot.log") {}

DovecotProcess::~DovecotProcess() {
    try {
        stop();
    } catch (...) {
        // A destructor must not throw; stop() already did what it could.
    }
}

void DovecotProcess::start(const Readiness &ready) {
    if (running()) {
        return;
    }
    master_pid_ =
        spawn_process({dovecot_binary, "-F", "-c", conf_path_}, output_path_, output_path_);
    wait_until_ready(ready);
}

void DovecotProcess::wait_until_ready(const Readiness &ready) {
    const auto deadline = Clock::now() + ready.timeout;
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
            LineConnection::connect_tcp("127.0.0.1", ready.imap_port, Milliseconds(200));
            break;
        } catch (const Error &) {
        }
    }
    if (ready.worker_socket_path.empty()) {
        return;
    }
    // The master creates the listener at once; the handshake proves that the
    // worker process itself is up.
    std::string last_error = "no socket yet";
    while (still_waiting("the xaps worker (" + last_error + ")")) {
        if (!is_socket(ready.worker_socket_path)) {
            std::this_thread::sleep_for(Milliseconds(20));
            continue;
        }
        try {
            WorkerClient probe(ready.worker_socket_path, Milliseconds(1000));
            return;
        } catch (const Error &error) {
            last_error = error.what();
            std::this_thread::sleep_for(Milliseconds(100));
        }
    }
}

void DovecotProcess::fail_start(const std::string &reason) {
    stop();
    throw Error(ErrorKind::unavailable, "Dovecot did not start: " + reason +
                                            "\n--- dovecot output ---\n" + output() + "--- " +
                                            log_path_ + " ---\n" + log());
}

bool DovecotProcess::reap_master(bool wait) {
    if (master_pid_ <= 0) {
        return true;
    }
    int status = 0;
    pid_t done = ::waitpid(master_pid_, &status, wait ? 0 : WNOHANG);
    if (done == 0) {
        return false;
    }
    if (done == master_pid_) {
        std::ofstream(output_path_, std::ios::app)
            << "[test harness] dovecot master " << describe_wait_status(status) << "\n";
    }
    master_pid_ = -1;
    return true;
}

void DovecotProcess::stop() {
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

std::string DovecotProcess::log() const {
    return read_file(log_path_);
}

std::vector<std::string> DovecotProcess::log_lines() const {
    std::vector<std::string> lines;
    std::istringstream text(log());
    for (std::string line; std::getline(text, line);) {
        lines.push_back(line);
    }
    return lines;
}

bool ShutdownRaceFilter::ignore(std::string_view line) {
    if (line.find("master: Warning: Killed with signal 15") != std::string::npos) {
        stopping_ = true;
    }
    // 2.3 and 2.4 word it differently.
    return stopping_ && (line.find("Fatal: Error reading configuration") != std::string::npos ||
                         line.find("Fatal: Failed to read configuration") != std::string::npos);
}

std::vector<std::string> DovecotProcess::log_problems() const {
    std::vector<std::string> problems;
    ShutdownRaceFilter shutdown_race;
    for (auto &line : log_lines()) {
        if (shutdown_race.ignore(line)) {
            continue;
        }
        if (line.find("Panic: ") != std::string::npos ||
            line.find("Fatal: ") != std::string::npos) {
            problems.push_back(std::move(line));
        }
    }
    return problems;
}

bool DovecotProcess::wait_for_log(std::string_view text, Milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (log().find(text) != std::string::npos) {
            return true;
        }
        if (Clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(Milliseconds(20));
    }
}

std::string DovecotProcess::output() const {
    return read_file(output_path_);
}

std::optional<ServiceProcess> DovecotProcess::service_process(const std::string &executable) const {
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

} // namespace xaps::test
