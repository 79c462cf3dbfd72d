#include "process-stats.h"

#include "xaps-error.h"

#include <dirent.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

namespace fs = std::filesystem;

namespace xaps::bench {

namespace {

std::string read_text(const std::string &path) {
    std::ifstream in(path);
    if (!in) {
        throw Error(ErrorKind::unavailable, "cannot read " + path);
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// The fields of /proc/<pid>/stat after the command name, which may contain
// spaces and parentheses: field 3 (state) is element 0.
std::vector<std::string> stat_fields(pid_t pid) {
    const std::string text = read_text("/proc/" + std::to_string(pid) + "/stat");
    const std::size_t end_of_name = text.rfind(')');
    if (end_of_name == std::string::npos) {
        throw Error(ErrorKind::unavailable, "unreadable /proc/" + std::to_string(pid) + "/stat");
    }
    std::istringstream rest(text.substr(end_of_name + 1));
    std::vector<std::string> fields;
    for (std::string field; rest >> field;) {
        fields.push_back(field);
    }
    return fields;
}

long long to_number(std::string_view text) {
    long long value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
}

pid_t parent_of(pid_t pid) {
    try {
        const auto fields = stat_fields(pid);
        return fields.size() > 1 ? static_cast<pid_t>(to_number(fields[1])) : 0;
    } catch (const Error &) {
        return 0;
    }
}

bool descends_from(pid_t pid, pid_t ancestor) {
    for (int depth = 0; pid > 1 && depth < 64; ++depth) {
        if (pid == ancestor) {
            return true;
        }
        pid = parent_of(pid);
    }
    return false;
}

std::chrono::nanoseconds schedstat_runtime(const std::string &path) {
    std::istringstream in(read_text(path));
    long long runtime_ns = 0;
    in >> runtime_ns;
    return std::chrono::nanoseconds(runtime_ns);
}

} // namespace

CpuTime process_cpu(pid_t pid) {
    const auto fields = stat_fields(pid);
    if (fields.size() < 13) {
        throw Error(ErrorKind::unavailable, "short /proc/" + std::to_string(pid) + "/stat");
    }
    // utime and stime are fields 14 and 15 of stat(5), elements 11 and 12 here.
    const long long ticks = to_number(fields[11]) + to_number(fields[12]);
    static const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
    CpuTime cpu;
    cpu.ticks = std::chrono::microseconds(ticks * 1000000 / ticks_per_second);
    for (pid_t tid : thread_ids(pid)) {
        try {
            cpu.precise += thread_cpu(pid, tid);
        } catch (const Error &) {
            // The thread ended meanwhile.
        }
    }
    return cpu;
}

std::chrono::nanoseconds thread_cpu(pid_t pid, pid_t tid) {
    return schedstat_runtime("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) +
                             "/schedstat");
}

std::vector<pid_t> thread_ids(pid_t pid) {
    std::vector<pid_t> ids;
    std::error_code error;
    for (const auto &entry :
         fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", error)) {
        ids.push_back(static_cast<pid_t>(to_number(entry.path().filename().string())));
    }
    return ids;
}

MemoryUsage process_memory(pid_t pid) {
    std::istringstream lines(read_text("/proc/" + std::to_string(pid) + "/status"));
    MemoryUsage usage;
    for (std::string line; std::getline(lines, line);) {
        std::istringstream fields(line);
        std::string key;
        std::size_t kib = 0;
        fields >> key >> kib;
        if (key == "VmRSS:") {
            usage.rss_kib = kib;
        } else if (key == "RssAnon:") {
            usage.anon_kib = kib;
        } else if (key == "RssFile:") {
            usage.file_kib = kib;
        }
    }
    return usage;
}

namespace {

// Every process running `executable`.
std::vector<pid_t> processes_running(const std::string &executable) {
    std::vector<pid_t> found;
    std::error_code error;
    const fs::path wanted = fs::canonical(executable, error);
    if (error) {
        return found;
    }
    for (const auto &entry : fs::directory_iterator("/proc", error)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name[0] < '0' || name[0] > '9') {
            continue;
        }
        std::error_code link_error;
        const fs::path exe = fs::read_symlink(entry.path() / "exe", link_error);
        if (!link_error && exe == wanted) {
            found.push_back(static_cast<pid_t>(to_number(name)));
        }
    }
    return found;
}

} // namespace

pid_t find_descendant(const std::string &executable) {
    const pid_t self = ::getpid();
    pid_t newest = 0;
    for (pid_t pid : processes_running(executable)) {
        if (pid > newest && descends_from(pid, self)) {
            newest = pid;
        }
    }
    return newest;
}

std::vector<pid_t> children_of(pid_t parent, const std::string &executable) {
    std::vector<pid_t> children;
    for (pid_t pid : processes_running(executable)) {
        if (parent_of(pid) == parent) {
            children.push_back(pid);
        }
    }
    return children;
}

std::chrono::nanoseconds total_cpu(const std::vector<pid_t> &pids) {
    std::chrono::nanoseconds total{0};
    for (pid_t pid : pids) {
        try {
            total += process_cpu(pid).precise;
        } catch (const Error &) {
            // Gone meanwhile.
        }
    }
    return total;
}

double load_average() {
    double load = 0;
    std::istringstream(read_text("/proc/loadavg")) >> load;
    return load;
}

} // namespace xaps::bench
