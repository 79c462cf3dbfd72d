// The processes of a running test Dovecot, as /proc shows them: the fault
// and security suites find the worker there to kill, stall, measure and
// inspect it.
#pragma once

#include "dovecot-instance.h"
#include "e2e-environment.h"
#include "worker-client.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace xaps::test::e2e {

// "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
inline pid_t parent_pid_of(const std::string &pid) {
    std::ifstream stat_file("/proc/" + pid + "/stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), {});
    const auto close = stat.rfind(')');
    if (close == std::string::npos) {
        return -1;
    }
    std::istringstream after_comm(stat.substr(close + 1));
    std::string state;
    pid_t parent = -1;
    after_comm >> state >> parent;
    return parent;
}

// True while `pid` is a live process running the built worker: not once it
// exited (a zombie has no executable) nor when the pid runs something else.
inline bool runs_worker(pid_t pid) {
    namespace fs = std::filesystem;
    std::error_code error;
    const fs::path exe = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", error);
    return !error && exe == fs::canonical(worker_path);
}

// Every xaps-worker process the instance's master runs, in pid order: more
// than one only while a worker of an older configuration still finishes.
inline std::vector<pid_t> worker_pids(const DovecotInstance &dovecot) {
    namespace fs = std::filesystem;
    std::vector<pid_t> pids;
    std::error_code error;
    for (const auto &entry : fs::directory_iterator("/proc", error)) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        const auto pid = static_cast<pid_t>(std::stol(name));
        if (parent_pid_of(name) == dovecot.master_pid() && runs_worker(pid)) {
            pids.push_back(pid);
        }
    }
    std::sort(pids.begin(), pids.end());
    return pids;
}

// The instance's xaps-worker process (the master's child running the built
// worker), or -1; the oldest pid while an older one still finishes.
inline pid_t worker_pid(const DovecotInstance &dovecot) {
    const std::vector<pid_t> pids = worker_pids(dovecot);
    return pids.empty() ? -1 : pids.front();
}

// The "Key:" line of /proc/<pid>/status without the key, or nullopt.
inline std::optional<std::string> process_status_field(pid_t pid, const std::string &key) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);) {
        if (line.starts_with(key + ":")) {
            return line.substr(key.size() + 1);
        }
    }
    return std::nullopt;
}

// The numbers of a status line such as "Uid:" (real, effective, saved, fs).
inline std::vector<long> process_status_numbers(pid_t pid, const std::string &key) {
    std::vector<long> numbers;
    if (auto field = process_status_field(pid, key)) {
        std::istringstream in(*field);
        for (long n = 0; in >> n;) {
            numbers.push_back(n);
        }
    }
    return numbers;
}

// Resident memory in KiB (VmRSS), 0 when unknown.
inline long process_rss_kib(pid_t pid) {
    std::vector<long> rss = process_status_numbers(pid, "VmRSS");
    return rss.empty() ? 0 : rss[0];
}

// The process's one-letter state from /proc/<pid>/stat ('T' when stopped).
inline char process_state(pid_t pid) {
    std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), {});
    const auto close = stat.rfind(')');
    return close == std::string::npos || close + 2 >= stat.size() ? '?' : stat[close + 2];
}

// Waits until a worker other than `old_pid` runs and answers LIST on its
// admin socket; returns its pid, or -1 after the timeout.
inline pid_t wait_for_serving_worker(const DovecotInstance &dovecot, pid_t old_pid,
                                     std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        const pid_t pid = worker_pid(dovecot);
        if (pid > 0 && pid != old_pid) {
            try {
                WorkerClient probe(dovecot.admin_socket_path(), std::chrono::milliseconds(500));
                probe.list("nobody-at-all");
                return pid;
            } catch (const std::exception &) {
                // still starting
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
}

} // namespace xaps::test::e2e
