#include "bench-environment.h"

#include "process-stats.h"
#include "test-pki.h"
#include "xaps-error.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace xaps::bench {

MockApnsConfig mock_config(std::uint32_t max_streams, bool record_requests) {
    MockApnsConfig config = test::apple_like_mock_config();
    // The worker authenticates with the test client certificate as at Apple;
    // h2load, measured against the same mock, cannot present one.
    config.accept_anonymous_clients = true;
    config.max_concurrent_streams = max_streams;
    config.record_requests = record_requests;
    return config;
}

test::DovecotOptions dovecot_options(std::uint16_t apns_port, bool with_plugin) {
    test::DovecotOptions options;
    options.plugin_path = plugin_path;
    options.enable_plugin = with_plugin;
    options.worker_path = worker_path;
    options.pki_dir = pki_dir;
    options.apns_port = apns_port;
    return options;
}

pid_t wait_for_worker_process(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pid_t pid = find_descendant(worker_path); pid > 0) {
            return pid;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            throw Error(ErrorKind::unavailable, "no xaps-worker process found");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

std::map<std::string, std::string> worker_status(test::WorkerClient &worker) {
    std::map<std::string, std::string> status;
    for (const auto &reply : worker.request({"STATUS"})) {
        if (reply.is_row() && reply.fields.size() >= 2) {
            status[reply.fields[0]] = reply.fields[1];
        } else if (reply.failed()) {
            throw Error(ErrorKind::unavailable, "STATUS failed: " + reply.line);
        }
    }
    return status;
}

std::uint64_t status_number(const std::map<std::string, std::string> &status,
                            const std::string &key) {
    const auto found = status.find(key);
    return found == status.end() ? 0 : std::strtoull(found->second.c_str(), nullptr, 10);
}

void require_root(const char *program) {
    if (::geteuid() != 0) {
        std::fprintf(stderr,
                     "%s runs a real Dovecot and creates the users vmail and xaps: run it "
                     "as root (scripts/bench.sh does).\n",
                     program);
        std::exit(2);
    }
}

pid_t start_mock_and_find_its_thread(MockApnsServer &mock) {
    const std::vector<pid_t> before = thread_ids(::getpid());
    mock.start();
    for (pid_t tid : thread_ids(::getpid())) {
        if (std::find(before.begin(), before.end(), tid) == before.end()) {
            return tid;
        }
    }
    throw Error(ErrorKind::internal, "the mock APNs server started no thread");
}

} // namespace xaps::bench
