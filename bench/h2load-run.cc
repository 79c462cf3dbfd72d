#include "h2load-run.h"

#include "xaps-error.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <regex>

extern char **environ;

namespace xaps::bench {

namespace {

constexpr const char *h2load_binary = "h2load";

std::size_t number_before(const std::string &text, const std::string &suffix) {
    std::smatch match;
    if (std::regex_search(text, match, std::regex("([0-9]+) " + suffix))) {
        return std::stoul(match[1].str());
    }
    return 0;
}

} // namespace

bool h2load_installed() {
    return std::system("h2load --version >/dev/null 2>&1") == 0;
}

H2loadResult run_h2load(const H2loadOptions &options) {
    std::vector<std::string> args{h2load_binary,
                                  "-n",
                                  std::to_string(options.requests),
                                  "-c",
                                  std::to_string(options.connections),
                                  "-m",
                                  std::to_string(options.streams),
                                  "-t",
                                  "1"};
    if (!options.body_file.empty()) {
        args.insert(args.end(), {"-d", options.body_file});
    }
    for (const auto &header : options.headers) {
        args.insert(args.end(), {"-H", header});
    }
    args.push_back("https://127.0.0.1:" + std::to_string(options.port) + options.path);
    std::vector<char *> argv;
    for (auto &arg : args) {
        argv.push_back(arg.data());
    }
    argv.push_back(nullptr);

    int output_pipe[2];
    if (::pipe2(output_pipe, O_CLOEXEC) != 0) {
        throw Error(ErrorKind::unavailable, std::string("pipe: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, output_pipe[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, output_pipe[1], STDERR_FILENO);
    pid_t pid = 0;
    const int spawned =
        ::posix_spawnp(&pid, h2load_binary, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(output_pipe[1]);
    H2loadResult result;
    if (spawned == 0) {
        char buffer[4096];
        for (ssize_t got; (got = ::read(output_pipe[0], buffer, sizeof(buffer))) > 0;) {
            result.output.append(buffer, static_cast<std::size_t>(got));
        }
    }
    ::close(output_pipe[0]);
    if (spawned != 0) {
        throw Error(ErrorKind::unavailable,
                    std::string("cannot run h2load: ") + std::strerror(spawned));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);

    std::smatch match;
    if (!std::regex_search(result.output, match,
                           std::regex(R"(finished in [^,]+, ([0-9.]+) req/s)"))) {
        throw Error(ErrorKind::unavailable, "h2load reported no rate:\n" + result.output);
    }
    result.requests_per_second = std::stod(match[1].str());
    result.succeeded = number_before(result.output, "succeeded");
    result.failed = number_before(result.output, "failed");
    return result;
}

} // namespace xaps::bench
