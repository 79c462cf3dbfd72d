// The Dovecot master process of a test fixture: `dovecot -F -c <conf>` run as
// a child of the test, what it printed, the log file its configuration names,
// and its service processes. DovecotInstance (a configuration written from
// scratch) and InstalledDovecot (a copy of /etc/dovecot) both run Dovecot
// through it.
#pragma once

#include "line-connection.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace xaps::test {

// A process of the running instance, as /proc shows it.
struct ServiceProcess {
    pid_t pid = -1;
    std::string executable; // /proc/<pid>/exe
    // The "Uid:" line of /proc/<pid>/status: real, effective, saved, filesystem.
    std::vector<uid_t> uids;
};

// What a command run by a test (doveadm, mostly) left behind.
struct CommandResult {
    int exit_code = -1; // -1: killed (time limit) or did not exit normally
    std::string out;
    std::string err;
};

// fork + exec of argv[0] (a path) with stdin from /dev/null and stdout and
// stderr appended to the two files (which may be the same). The child dies
// with the test (or when meson's timeout kills it). Throws xaps::Error.
pid_t spawn_process(const std::vector<std::string> &argv, const std::string &out_path,
                    const std::string &err_path);

// spawn_process() and waits for the command's end, killing it after
// `time_limit`; returns what it wrote to the two files (read after it ended).
CommandResult run_command(const std::vector<std::string> &argv, const std::string &out_path,
                          const std::string &err_path, Milliseconds time_limit);

// Reads Dovecot's log line by line and tells Dovecot's own shutdown race
// apart from problems: once the master has been told to stop, a service that
// was still starting up (auth, after waiting for the stats process) can find
// the config service gone and log "Fatal: Error reading configuration" (2.3)
// or "Fatal: Failed to read configuration" (2.4). That
// is Dovecot's, not the test's; every other Panic or Fatal still counts.
class ShutdownRaceFilter {
public:
    // True for a line to ignore; call for every line, in order.
    bool ignore(std::string_view line);

private:
    bool stopping_ = false;
};

class DovecotProcess {
public:
    // What start() waits for before it returns.
    struct Readiness {
        // IMAP accepts connections on 127.0.0.1:imap_port.
        std::uint16_t imap_port = 0;
        // The xaps worker answered the protocol handshake here; empty: no worker.
        std::string worker_socket_path;
        Milliseconds timeout{15000};
    };

    // Dovecot will run with `conf_path`, print into <dir>/dovecot.out, and
    // must log into log_path(), <dir>/dovecot.log.
    DovecotProcess(std::string conf_path, const std::string &dir);
    // Stops Dovecot.
    ~DovecotProcess();
    DovecotProcess(const DovecotProcess &) = delete;
    DovecotProcess &operator=(const DovecotProcess &) = delete;

    // Runs Dovecot and returns once it is ready. Throws xaps::Error with
    // Dovecot's output and log otherwise (Dovecot stopped again).
    void start(const Readiness &ready);
    // SIGTERM, then waits for the master to exit (SIGKILL after 20 s).
    void stop();
    bool running() const { return master_pid_ > 0; }
    // -1 when not running.
    pid_t master_pid() const { return master_pid_; }

    const std::string &log_path() const { return log_path_; }
    // The whole log file (empty before Dovecot wrote it).
    std::string log() const;
    std::vector<std::string> log_lines() const;
    // Log lines with "Panic:" or "Fatal:", the ones no test may cause.
    std::vector<std::string> log_problems() const;
    // Waits until the log contains `text`.
    bool wait_for_log(std::string_view text, Milliseconds timeout) const;
    // What Dovecot printed on stdout/stderr (configuration errors land here),
    // and how the master exited.
    std::string output() const;

    // The master's child running `executable`, if there is one.
    std::optional<ServiceProcess> service_process(const std::string &executable) const;

private:
    void wait_until_ready(const Readiness &ready);
    [[noreturn]] void fail_start(const std::string &reason);
    bool reap_master(bool wait);

    std::string conf_path_;
    std::string output_path_;
    std::string log_path_;
    pid_t master_pid_ = -1;
};

} // namespace xaps::test
