// What the kernel says about a process: CPU time and resident memory from
// /proc, and finding the worker that Dovecot's master forked for us.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <sys/types.h>
#include <vector>

namespace xaps::bench {

struct CpuTime {
    // utime + stime from /proc/<pid>/stat: what `ps` and the brief count, in
    // clock ticks (10 ms steps), so only long intervals are precise.
    std::chrono::microseconds ticks{0};
    // The sum of every thread's run time from /proc/<pid>/task/*/schedstat,
    // in nanoseconds: precise for short intervals.
    std::chrono::nanoseconds precise{0};
};
// Throws xaps::Error(unavailable) when the process is gone.
CpuTime process_cpu(pid_t pid);
// One thread's run time (schedstat), e.g. the mock APNs server's thread.
std::chrono::nanoseconds thread_cpu(pid_t pid, pid_t tid);
std::vector<pid_t> thread_ids(pid_t pid);

struct MemoryUsage {
    std::size_t rss_kib = 0;  // VmRSS
    std::size_t anon_kib = 0; // RssAnon: heap, stacks
    std::size_t file_kib = 0; // RssFile: mapped files (LMDB's map, libraries)
};
MemoryUsage process_memory(pid_t pid);

// The newest process whose executable is `executable` and that descends from
// this process (so a Dovecot started by someone else never matches); 0 if none.
pid_t find_descendant(const std::string &executable);

// The processes whose parent is `parent` and whose executable is `executable`.
std::vector<pid_t> children_of(pid_t parent, const std::string &executable);
// The precise CPU time of all of them (processes gone meanwhile count nothing).
std::chrono::nanoseconds total_cpu(const std::vector<pid_t> &pids);

// The 1-minute load average: how busy the shared machine was meanwhile.
double load_average();

} // namespace xaps::bench
