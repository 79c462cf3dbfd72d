// doveadm runs with the built doveadm module, for the end-to-end suites that
// drive `doveadm xaps ...`.
//
// doveadm loads plugins only from its fixed module directory
// (/usr/lib/dovecot/modules/doveadm, compiled in; no setting or environment
// variable changes it). Each run here gets a private mount namespace in which
// a directory holding the built module is bind-mounted over that directory:
// nothing on the system changes, and the namespace disappears with the
// process.
#pragma once

#include "dovecot-process.h"
#include "temporary-directory.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <poll.h>
#include <sched.h>
#include <stdexcept>
#include <string>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace xaps::test::e2e {

inline constexpr const char *doveadm_binary = "/usr/bin/doveadm";
inline constexpr const char *doveadm_module_dir = "/usr/lib/dovecot/modules/doveadm";
// Bounds a hung doveadm only; a run takes a fraction of a second.
inline constexpr auto doveadm_time_limit = std::chrono::seconds(90);
// What run_in_namespace() reports when the namespace cannot be made (no
// privilege for it here): the suites skip then.
inline constexpr int no_mount_namespace_exit_code = 126;

// A temporary directory holding (a link to) the built module, to be mounted
// over doveadm_module_dir.
inline std::unique_ptr<TemporaryDirectory>
directory_holding_doveadm_module(const std::string &module_path) {
    namespace fs = std::filesystem;
    auto directory = std::make_unique<TemporaryDirectory>("xaps-doveadm-modules-");
    fs::create_symlink(fs::absolute(module_path),
                       fs::path(directory->path()) / fs::path(module_path).filename());
    return directory;
}

// Child side of run_in_namespace(): only async-signal-safe calls.
[[noreturn]] inline void exec_in_namespace(const char *module_dir, const char *const *argv,
                                           int in_fd, int out_fd, int err_fd, pid_t parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
        ::_exit(127);
    }
    ::dup2(in_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount(module_dir, doveadm_module_dir, nullptr, MS_BIND, nullptr) != 0) {
        static const char message[] = "cannot bind-mount the doveadm module directory\n";
        (void)!::write(STDERR_FILENO, message, sizeof(message) - 1);
        ::_exit(no_mount_namespace_exit_code);
    }
    ::execv(argv[0], const_cast<char *const *>(argv));
    ::_exit(127);
}

// Runs argv with doveadm's module directory replaced by module_dir, feeding
// it `input` and collecting its output, killed after doveadm_time_limit.
inline CommandResult run_in_namespace(const std::string &module_dir,
                                      const std::vector<std::string> &args,
                                      const std::string &input = {}) {
    std::vector<const char *> argv;
    for (const auto &arg : args) {
        argv.push_back(arg.c_str());
    }
    argv.push_back(nullptr);

    int pipes[3][2];
    for (int made = 0; made < 3; made++) {
        if (::pipe2(pipes[made], O_CLOEXEC) != 0) {
            for (int i = 0; i < made; i++) {
                ::close(pipes[i][0]);
                ::close(pipes[i][1]);
            }
            throw std::runtime_error("pipe failed");
        }
    }
    auto &[in_pipe, out_pipe, err_pipe] = pipes;
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
        exec_in_namespace(module_dir.c_str(), argv.data(), in_pipe[0], out_pipe[1], err_pipe[1],
                          parent);
    }
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    if (pid < 0) {
        ::close(in_pipe[1]);
        ::close(out_pipe[0]);
        ::close(err_pipe[0]);
        throw std::runtime_error("fork failed");
    }
    // doveadm reads its input only after it started: small inputs fit the
    // pipe buffer, so this cannot block.
    std::signal(SIGPIPE, SIG_IGN);
    (void)!::write(in_pipe[1], input.data(), input.size());
    ::close(in_pipe[1]);

    CommandResult result;
    const auto deadline = std::chrono::steady_clock::now() + doveadm_time_limit;
    struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string *sinks[2] = {&result.out, &result.err};
    int open_fds = 2;
    bool killed = false;
    while (open_fds > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            killed = true;
            break;
        }
        const int ready = ::poll(fds, 2, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR) {
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                char buffer[4096];
                const ssize_t n = ::read(fds[i].fd, buffer, sizeof(buffer));
                if (n > 0) {
                    sinks[i]->append(buffer, static_cast<std::size_t>(n));
                } else if (n == 0 || errno != EINTR) {
                    ::close(fds[i].fd);
                    fds[i].fd = -1;
                    open_fds--;
                }
            }
        }
    }
    for (auto &fd : fds) {
        if (fd.fd >= 0) {
            ::close(fd.fd);
        }
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!killed && WIFEXITED(status)) {
        result.exit_code = WEXITSTATUS(status);
    }
    return result;
}

} // namespace xaps::test::e2e
