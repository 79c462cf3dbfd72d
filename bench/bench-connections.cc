// bench-connections: figure 7, one big server. 10,000 mail processes (imap,
// lmtp, pop3, submission) each hold a connection to the worker's mail socket,
// handshake done and idle, as a process between two commands does. An admin
// expecting that many raises the shipped client_limit (4096) as its comment
// says; here to 11,000. Measured:
//   * connections held: what the worker's STATUS counts, and that the first,
//     a middle and the last of them are still answered at the end;
//   * worker memory per idle connection: the growth of its anonymous memory
//     (heap) from 1,000 connections (allocator warmed up) to 10,000, per
//     connection; and its RSS with all of them;
//   * while all are connected: 1,000 REGISTERs one at a time from one more
//     mail connection (round trip each), then a NOTIFY for one of those users
//     and whether its push reaches the mock APNs. The same REGISTERs with no
//     other connection, before, are the reference.
#include "bench-devices.h"
#include "bench-environment.h"
#include "bench-report.h"
#include "process-stats.h"
#include "worker-client.h"
#include "xaps-error.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr const char *figure = "7 connections";
constexpr std::size_t client_limit = 11000;
// This process holds one descriptor per connection too, and the worker,
// which inherits the limit, its listeners, store and APNs connections.
constexpr rlim_t fd_limit_needed = 10500;

struct Options {
    std::size_t connections = 10000;
    std::size_t warm_up = 1000;
    std::size_t registers = 1000;
};

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--connections") == 0) {
            options.connections = std::strtoul(argv[i + 1], nullptr, 10);
        } else if (std::strcmp(argv[i], "--registers") == 0) {
            options.registers = std::strtoul(argv[i + 1], nullptr, 10);
        } else {
            std::fprintf(stderr, "usage: bench-connections [--connections N] [--registers N]\n");
            std::exit(2);
        }
    }
    if (options.connections <= options.warm_up || options.registers == 0) {
        std::fprintf(stderr,
                     "bench-connections: --connections must exceed %zu, --registers be positive\n",
                     options.warm_up);
        std::exit(2);
    }
    return options;
}

// Debian's dovecot.service gives Dovecot LimitNOFILE=65535; a shell usually
// has 1024 soft. Dovecot's master and the worker inherit this process's limit.
void raise_fd_limit(std::size_t connections) {
    struct rlimit limit {};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
        throw Error(ErrorKind::internal, std::string("getrlimit: ") + std::strerror(errno));
    }
    const rlim_t needed = std::max<rlim_t>(fd_limit_needed, connections + 500);
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
        throw Error(ErrorKind::config,
                    "the hard limit of open files is " + std::to_string(limit.rlim_max) +
                        ", under the " + std::to_string(needed) +
                        " this benchmark needs: raise it (ulimit -Hn, or LimitNOFILE) and run "
                        "it again");
    }
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        throw Error(ErrorKind::internal, std::string("setrlimit: ") + std::strerror(errno));
    }
}

double mib(std::size_t kib) {
    return static_cast<double>(kib) / 1024;
}

std::map<std::string, std::string> admin_status(const test::DovecotInstance &dovecot) {
    test::WorkerClient admin(dovecot.admin_socket_path());
    return worker_status(admin);
}

// REGISTERs of devices [first, first + count), one at a time; each round trip in ms.
std::vector<double> register_one_at_a_time(test::WorkerClient &mail, std::size_t first,
                                           std::size_t count) {
    std::vector<double> round_trips_ms;
    for (std::size_t device = first; device < first + count; ++device) {
        const auto sent = Clock::now();
        const auto replies = mail.request(test::register_request(device_registration(device)));
        round_trips_ms.push_back(duration<double, std::milli>(Clock::now() - sent).count());
        if (!replies.back().ok()) {
            throw Error(ErrorKind::unavailable, "REGISTER failed: " + replies.back().line);
        }
    }
    return round_trips_ms;
}

struct Measured {
    std::size_t held = 0;
    double anon_per_connection_kib = 0;
    double rss_per_connection_kib = 0;
    MemoryUsage all_connected;
    double connect_seconds = 0;
    std::vector<double> register_alone_ms;
    std::vector<double> register_ms;
    double notify_to_push_ms = 0;
    bool push_arrived = false;
};

Measured measure(const Options &options) {
    raise_fd_limit(options.connections);
    MockApnsServer mock(mock_config(1000, true));
    mock.start();
    auto dovecot_opts = dovecot_options(mock.port(), false);
    dovecot_opts.extra_config +=
        "service xaps {\n  client_limit = " + std::to_string(client_limit) + "\n}\n";
    test::DovecotInstance dovecot(dovecot_opts);
    dovecot.start();
    const pid_t worker = wait_for_worker_process();
    const auto configured = admin_status(dovecot);
    if (status_number(configured, "client_limit") != client_limit) {
        throw Error(ErrorKind::config,
                    "the worker runs with client_limit " +
                        std::to_string(status_number(configured, "client_limit")) + ", not " +
                        std::to_string(client_limit));
    }

    Measured measured;
    // The same REGISTERs with no other connection: what the idle ones change.
    // Devices after the measured run's, so that each REGISTER stores a new one.
    {
        test::WorkerClient alone(dovecot.worker_socket_path());
        measured.register_alone_ms =
            register_one_at_a_time(alone, options.registers, options.registers);
    }
    progress("figure 7: REGISTER one at a time, no other connection: " +
             describe_distribution(measured.register_alone_ms, "ms"));

    progress("figure 7: " + std::to_string(options.connections) +
             " idle mail-process connections to the worker (client_limit " +
             std::to_string(client_limit) + ")");
    std::vector<std::unique_ptr<test::WorkerClient>> peers;
    peers.reserve(options.connections);
    const auto connect_start = Clock::now();
    auto connect_until = [&](std::size_t count) {
        while (peers.size() < count) {
            peers.push_back(std::make_unique<test::WorkerClient>(dovecot.worker_socket_path()));
        }
    };
    connect_until(options.warm_up);
    const MemoryUsage warmed_up = process_memory(worker);
    connect_until(options.connections);
    measured.connect_seconds = duration<double>(Clock::now() - connect_start).count();
    measured.all_connected = process_memory(worker);
    // STATUS counts the admin connection asking it as well.
    measured.held = status_number(admin_status(dovecot), "connections") - 1;
    const double added = static_cast<double>(options.connections - options.warm_up);
    measured.anon_per_connection_kib = (static_cast<double>(measured.all_connected.anon_kib) -
                                        static_cast<double>(warmed_up.anon_kib)) /
                                       added;
    measured.rss_per_connection_kib = (static_cast<double>(measured.all_connected.rss_kib) -
                                       static_cast<double>(warmed_up.rss_kib)) /
                                      added;
    progress("  " + std::to_string(peers.size()) + " connected in " +
             fixed(measured.connect_seconds, 1) + " s; worker holds " +
             std::to_string(measured.held) + "; worker RSS " + fixed(mib(warmed_up.rss_kib), 1) +
             " -> " + fixed(mib(measured.all_connected.rss_kib), 1) + " MiB, anonymous " +
             fixed(mib(warmed_up.anon_kib), 1) + " -> " +
             fixed(mib(measured.all_connected.anon_kib), 1) + " MiB");

    test::WorkerClient mail(dovecot.worker_socket_path());
    measured.register_ms = register_one_at_a_time(mail, 0, options.registers);
    progress("  REGISTER one at a time: " + describe_distribution(measured.register_ms, "ms") +
             " (load " + fixed(load_average(), 1) + ")");

    const std::size_t pushes_before = mock.requests_received();
    const auto notified = Clock::now();
    const auto notify = mail.request({"NOTIFY", device_user(0), "INBOX", "MessageNew"});
    if (!notify.back().ok()) {
        throw Error(ErrorKind::unavailable, "NOTIFY failed: " + notify.back().line);
    }
    measured.push_arrived = mock.wait_for_requests(pushes_before + 1, std::chrono::seconds(10));
    measured.notify_to_push_ms = duration<double, std::milli>(Clock::now() - notified).count();
    if (measured.push_arrived) {
        const auto pushes = mock.requests();
        const std::string expected_path = "/3/device/" + device_token(0);
        if (pushes.empty() || pushes.back().path != expected_path) {
            throw Error(ErrorKind::internal, "the push went to " +
                                                 (pushes.empty() ? "nowhere" : pushes.back().path) +
                                                 ", not " + expected_path);
        }
    }
    progress(std::string("  NOTIFY -> push at the mock: ") +
             (measured.push_arrived ? fixed(measured.notify_to_push_ms, 1) + " ms"
                                    : "none within 10 s; Dovecot's log:\n" + dovecot.log()));

    // The idle peers were kept, not merely counted: each of these answers.
    for (std::size_t i : {std::size_t{0}, peers.size() / 2, peers.size() - 1}) {
        const auto replies = peers[i]->request({"NOTIFY", "nobody", "INBOX", "MessageNew"});
        if (!replies.back().ok()) {
            throw Error(ErrorKind::unavailable, "idle connection " + std::to_string(i) +
                                                    " was not answered: " + replies.back().line);
        }
    }
    if (dovecot.log().find("client_limit") != std::string::npos) {
        progress("  the worker warned about client_limit (at 90% of it, as it should)");
    }
    peers.clear();
    dovecot.stop();
    if (auto problems = dovecot.log_problems(); !problems.empty()) {
        throw Error(ErrorKind::internal, "Dovecot logged: " + problems.front());
    }
    return measured;
}

} // namespace

int main(int argc, char **argv) {
    require_root("bench-connections");
    const Options options = parse_options(argc, argv);
    try {
        const Measured measured = measure(options);
        const std::string count = std::to_string(options.connections);
        const auto wanted = static_cast<double>(options.connections);
        report(figure, "idle mail connections held by the worker",
               static_cast<double>(measured.held), "conn", ">= " + count,
               at_least(static_cast<double>(measured.held), wanted));
        report(figure, "worker memory per idle connection (anonymous)",
               measured.anon_per_connection_kib, "KiB", "<= 16 KiB",
               at_most(measured.anon_per_connection_kib, 16));
        report(figure, "  the same from RSS", measured.rss_per_connection_kib, "KiB");
        report(figure, "worker RSS with " + count + " connected",
               mib(measured.all_connected.rss_kib), "MiB");
        report(figure, "  of which anonymous (heap)", mib(measured.all_connected.anon_kib), "MiB");
        report(figure, "opening " + count + " connections with handshake", measured.connect_seconds,
               "s");
        const double p99 = percentile(measured.register_ms, 0.99);
        report(figure, "REGISTER round trip p50, " + count + " connected",
               percentile(measured.register_ms, 0.5), "ms");
        report(figure, "REGISTER round trip p99, " + count + " connected", p99, "ms", "< 10 ms",
               at_most(p99, 10));
        report(figure, "REGISTER round trip p50, no other connection",
               percentile(measured.register_alone_ms, 0.5), "ms");
        report(figure, "REGISTER round trip p99, no other connection",
               percentile(measured.register_alone_ms, 0.99), "ms");
        report(figure, "NOTIFY -> push at the mock, " + count + " connected (1 = yes)",
               measured.push_arrived ? 1 : 0, "yes/no", "yes",
               measured.push_arrived ? Verdict::met : Verdict::missed);
        if (measured.push_arrived) {
            report(figure, "  NOTIFY -> push", measured.notify_to_push_ms, "ms");
        }
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-connections failed: %s\n", error.what());
        report_failure(figure, "run", error.what());
        return 1;
    }
    return 0;
}
