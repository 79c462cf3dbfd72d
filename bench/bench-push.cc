// bench-push: figures 1 (push throughput and cost) and 6 (churn).
//
// A worker with `devices` registrations (one device per user, written
// straight into its store) gets one NOTIFY MessageNew per user, pipelined over
// its socket, and pushes to the in-process mock APNs server. A round is timed
// from the first NOTIFY written to the last push received by the mock. In
// the same run, alternating with the worker's rounds, h2load pushes to the
// same mock over the same number of connections and streams: the worker's
// rate is reported as a fraction of h2load's. The worker's CPU per push comes
// from /proc/<pid>/stat (utime + stime) over all its rounds; the mock's
// server thread's CPU shows that the mock was not what limited the worker.
// Churn: in a round, 1% of the tokens (a different 1% each round) are
// answered 410 Unregistered, which makes the worker remove them from its store.
#include "bench-devices.h"
#include "bench-environment.h"
#include "bench-report.h"
#include "h2load-run.h"
#include "pipelined-worker-client.h"
#include "process-stats.h"
#include "temporary-directory.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

struct Options {
    std::size_t devices = 10000;
    unsigned rounds = 5;
    unsigned streams = 100;
    std::vector<unsigned> connections{1, 4};
    unsigned churn_percent = 1;
};

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: bench-push [--devices N] [--rounds N] [--streams N]\n"
                         "                  [--connections N[,N...]] [--churn-percent N]\n");
    std::exit(2);
}

unsigned parse_unsigned(const char *text) {
    unsigned value = 0;
    const char *end = text + std::strlen(text);
    if (std::from_chars(text, end, value).ptr != end) {
        usage();
    }
    return value;
}

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string option = argv[i];
        if (option == "--devices") {
            options.devices = parse_unsigned(argv[i + 1]);
        } else if (option == "--rounds") {
            options.rounds = parse_unsigned(argv[i + 1]);
        } else if (option == "--streams") {
            options.streams = parse_unsigned(argv[i + 1]);
        } else if (option == "--churn-percent") {
            options.churn_percent = parse_unsigned(argv[i + 1]);
        } else if (option == "--connections") {
            options.connections.clear();
            std::istringstream list(argv[i + 1]);
            for (std::string item; std::getline(list, item, ',');) {
                options.connections.push_back(parse_unsigned(item.c_str()));
            }
        } else {
            usage();
        }
    }
    if (argc % 2 == 0 || options.devices == 0 || options.rounds == 0 ||
        options.connections.empty()) {
        usage();
    }
    return options;
}

// The index in a bench token's last 8 hex digits (see device_token()).
std::size_t token_index(const std::string &token) {
    std::size_t index = 0;
    if (token.size() >= 8) {
        std::from_chars(token.data() + token.size() - 8, token.data() + token.size(), index, 16);
    }
    return index;
}

struct RoundResult {
    std::size_t pushes = 0;
    double seconds = 0;
    double pushes_per_second = 0;
    double mock_busy = 0; // the mock thread's CPU time / wall time
};

class PushBench {
public:
    PushBench(const Options &options, MockApnsServer &mock, pid_t mock_thread,
              std::string body_file)
        : options_(options), mock_(mock), mock_thread_(mock_thread),
          body_file_(std::move(body_file)) {}

    void run(unsigned connections, bool with_churn);

private:
    RoundResult run_round(test::WorkerClient &status, PipelinedWorkerClient &notifier);
    void wait_until_idle(test::WorkerClient &status);
    std::string notify_lines();

    const Options &options_;
    MockApnsServer &mock_;
    pid_t mock_thread_;
    std::string body_file_;
    std::uint64_t next_id_ = 1;
};

std::string PushBench::notify_lines() {
    std::string lines;
    lines.reserve(options_.devices * 48);
    const std::vector<std::string> events{"MessageNew"};
    for (std::size_t i = 0; i < options_.devices; ++i) {
        lines +=
            protocol::encode_request(next_id_++, protocol::Notify{device_user(i), "INBOX", events});
    }
    return lines;
}

void PushBench::wait_until_idle(test::WorkerClient &status) {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    for (;;) {
        const auto rows = worker_status(status);
        if (status_number(rows, "apns_queued") == 0 && status_number(rows, "apns_in_flight") == 0 &&
            status_number(rows, "pending") == 0) {
            return;
        }
        if (Clock::now() > deadline) {
            throw Error(ErrorKind::unavailable, "the worker did not finish its pushes");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

RoundResult PushBench::run_round(test::WorkerClient &status, PipelinedWorkerClient &notifier) {
    const auto before = worker_status(status);
    const std::size_t expected = status_number(before, "registrations");
    const std::string lines = notify_lines();
    const std::size_t base = mock_.requests_received();
    const auto mock_cpu_before = thread_cpu(::getpid(), mock_thread_);

    const auto start = Clock::now();
    std::optional<Error> notify_error;
    std::thread writer([&] {
        try {
            auto outcome = notifier.exchange(lines, options_.devices, std::chrono::seconds(60));
            if (outcome.failed > 0) {
                notify_error =
                    Error(ErrorKind::unavailable, "NOTIFY failed: " + outcome.first_failure);
            }
        } catch (const Error &error) {
            notify_error = error;
        }
    });
    const auto deadline = start + std::chrono::seconds(60);
    while (mock_.requests_received() < base + expected && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    const auto end = Clock::now();
    const auto mock_cpu_after = thread_cpu(::getpid(), mock_thread_);
    writer.join();
    if (notify_error) {
        throw *notify_error;
    }
    const std::size_t received = mock_.requests_received() - base;
    if (received < expected) {
        throw Error(ErrorKind::unavailable, "only " + std::to_string(received) + " of " +
                                                std::to_string(expected) + " pushes arrived");
    }
    wait_until_idle(status);

    RoundResult result;
    result.pushes = expected;
    result.seconds = duration<double>(end - start).count();
    result.pushes_per_second = static_cast<double>(expected) / result.seconds;
    result.mock_busy = duration<double>(mock_cpu_after - mock_cpu_before).count() / result.seconds;
    return result;
}

void PushBench::run(unsigned connections, bool with_churn) {
    const std::string suffix = ", " + std::to_string(connections) + " conn";
    progress("figure 1: " + std::to_string(connections) + " APNs connection(s), " +
             std::to_string(options_.streams) + " streams each, " +
             std::to_string(options_.devices) + " devices");
    auto dovecot_opts = dovecot_options(mock_.port(), false);
    dovecot_opts.plugin_settings["xaps_apns_connections"] = std::to_string(connections);
    test::DovecotInstance dovecot(dovecot_opts);
    populate_store(dovecot.db_path(), 0, options_.devices, dovecot.worker_user());
    dovecot.start();
    const pid_t worker = wait_for_worker_process();
    if (!mock_.wait_for_open_connections(connections, std::chrono::seconds(10))) {
        throw Error(ErrorKind::unavailable, "the worker did not open " +
                                                std::to_string(connections) +
                                                " connections to the mock APNs (it has " +
                                                std::to_string(mock_.open_connections()) + ")");
    }
    test::WorkerClient status(dovecot.admin_socket_path());
    PipelinedWorkerClient notifier(dovecot.worker_socket_path());

    // Warms up the worker's caches, nghttp2's header tables and LMDB's pages.
    run_round(status, notifier);

    H2loadOptions h2load;
    h2load.port = mock_.port();
    h2load.path = "/3/device/" + device_token(0);
    h2load.body_file = body_file_;
    h2load.headers = {"apns-topic: com.apple.mail.XServer.bench", "apns-push-type: background",
                      "apns-expiration: 1900000000"};
    h2load.requests = options_.devices * 3;
    h2load.connections = connections;
    h2load.streams = options_.streams;

    std::vector<double> worker_rates, h2load_rates, ratios, churn_rates, churn_ratios, mock_busy;
    std::vector<double> register_ms; // REGISTER latencies during the churn rounds
    std::size_t pushes = 0;
    double worker_seconds = 0;
    CpuTime cpu_total;
    for (unsigned round = 0; round < options_.rounds; ++round) {
        const H2loadResult reference = run_h2load(h2load);
        if (reference.failed > 0 || reference.succeeded == 0) {
            throw Error(ErrorKind::unavailable, "h2load failed:\n" + reference.output);
        }
        const CpuTime cpu_before = process_cpu(worker);
        const RoundResult clean = run_round(status, notifier);
        const CpuTime cpu_after = process_cpu(worker);
        cpu_total.ticks += cpu_after.ticks - cpu_before.ticks;
        cpu_total.precise += cpu_after.precise - cpu_before.precise;
        pushes += clean.pushes;
        worker_seconds += clean.seconds;
        worker_rates.push_back(clean.pushes_per_second);
        h2load_rates.push_back(reference.requests_per_second);
        ratios.push_back(clean.pushes_per_second / reference.requests_per_second);
        mock_busy.push_back(clean.mock_busy);
        std::string line = "  round " + std::to_string(round + 1) + ": h2load " +
                           fixed(reference.requests_per_second, 0) + " req/s, worker " +
                           fixed(clean.pushes_per_second, 0) + " pushes/s (" +
                           fixed(100 * ratios.back(), 1) + "%), mock thread busy " +
                           fixed(100 * clean.mock_busy, 0) + "%";
        if (with_churn) {
            const unsigned percent = options_.churn_percent;
            // Tokens whose index falls in [first, first + percent) of each
            // hundred are answered 410. A different slice each round: the
            // last round's are gone.
            auto churn_slice = [this, percent](std::size_t first) {
                mock_.set_responder([first, percent](const MockApnsRequest &request) {
                    MockApnsResponse response;
                    const std::size_t slot = token_index(request.device_token) % 100;
                    if (slot >= first && slot < first + percent) {
                        response.status = 410;
                        response.reason = "Unregistered";
                    }
                    return response;
                });
            };
            churn_slice((round * percent) % 100);
            const RoundResult churn = run_round(status, notifier);
            churn_rates.push_back(churn.pushes_per_second);
            churn_ratios.push_back(churn.pushes_per_second / clean.pushes_per_second);
            line += "; with " + std::to_string(percent) +
                    "% 410: " + fixed(churn.pushes_per_second, 0) + " pushes/s";

            // Once more, on another slice, with a phone renewing every 5 ms:
            // a durable commit that shares the loop with the 410 removals.
            // Its devices (index 99 of each hundred) are in no slice, so the
            // store's size does not change. This round's rate is not counted.
            // The 410s' removals are batched after a delay: the next round
            // counts the registrations that are left.
            for (std::size_t before = 0, now = SIZE_MAX; before != now;) {
                before = status_number(worker_status(status), "registrations");
                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                now = status_number(worker_status(status), "registrations");
            }
            churn_slice((50 + round * percent) % 99);
            std::atomic<bool> churning{true};
            std::string register_failure;
            std::thread renewer([&] {
                try {
                    test::WorkerClient phone(dovecot.worker_socket_path());
                    for (std::size_t n = 0; churning; ++n) {
                        const std::size_t index = (n * 100 + 99) % options_.devices;
                        const auto sent = Clock::now();
                        const auto replies =
                            phone.request(test::register_request(device_registration(index)));
                        register_ms.push_back(
                            duration<double, std::milli>(Clock::now() - sent).count());
                        if (!replies.back().ok()) {
                            throw Error(ErrorKind::unavailable, replies.back().line);
                        }
                        std::this_thread::sleep_for(std::chrono::milliseconds(5));
                    }
                } catch (const std::exception &error) {
                    register_failure = error.what();
                }
            });
            try {
                run_round(status, notifier);
            } catch (...) {
                churning = false;
                renewer.join();
                throw;
            }
            churning = false;
            renewer.join();
            mock_.set_responder(nullptr);
            if (!register_failure.empty()) {
                throw Error(ErrorKind::unavailable, "REGISTER during churn: " + register_failure);
            }
        }
        progress(line + " (load " + fixed(load_average(), 1) + ")");
    }
    const auto final_status = worker_status(status);
    dovecot.stop();
    if (auto problems = dovecot.log_problems(); !problems.empty()) {
        throw Error(ErrorKind::internal, "Dovecot logged: " + problems.front());
    }

    const double cpu_us = static_cast<double>(cpu_total.ticks.count()) / pushes;
    const double precise_cpu_us = duration<double, std::micro>(cpu_total.precise).count() / pushes;
    progress("  worker CPU per push: " + fixed(cpu_us, 2) + " us (stat), " +
             fixed(precise_cpu_us, 2) + " us (schedstat); worker busy " +
             fixed(100 * duration<double>(cpu_total.precise).count() / worker_seconds, 0) + "%");
    report("1 throughput", "worker push rate" + suffix, median(worker_rates), "pushes/s");
    report("1 throughput", "h2load rate, same mock" + suffix, median(h2load_rates), "req/s");
    report("1 throughput", "worker / h2load" + suffix, 100 * median(ratios), "%", ">= 70%",
           at_least(median(ratios), 0.70));
    report("1 throughput", "worker CPU per push" + suffix, cpu_us, "us", "<= 15 us",
           at_most(cpu_us, 15));
    report("1 throughput", "mock thread busy during worker rounds" + suffix,
           100 * median(mock_busy), "% of a core");
    if (with_churn) {
        report("6 churn",
               "push rate with " + std::to_string(options_.churn_percent) + "% 410" + suffix,
               median(churn_rates), "pushes/s");
        report("6 churn", "churn / clean rate" + suffix, 100 * median(churn_ratios), "%", ">= 90%",
               at_least(median(churn_ratios), 0.90));
        report("6 churn", "REGISTER p99 during churn" + suffix, percentile(register_ms, 0.99), "ms",
               "< 10 ms", at_most(percentile(register_ms, 0.99), 10));
        report("6 churn", "devices removed after 410" + suffix,
               static_cast<double>(status_number(final_status, "devices_removed")), "devices");
    }
}

} // namespace

int main(int argc, char **argv) {
    require_root("bench-push");
    const Options options = parse_options(argc, argv);
    if (!h2load_installed()) {
        report_failure("1 throughput", "all",
                       "h2load is not installed (apt-get install "
                       "nghttp2-client)");
        return 1;
    }
    try {
        test::TemporaryDirectory scratch("xaps-bench-");
        const std::string body_file = scratch.path() + "/push.json";
        std::ofstream(body_file) << R"({"aps":{"account-id":")" << device_registration(0).account_id
                                 << R"("}})";
        MockApnsServer mock(mock_config(options.streams));
        const pid_t mock_thread = start_mock_and_find_its_thread(mock);
        PushBench bench(options, mock, mock_thread, body_file);
        for (std::size_t i = 0; i < options.connections.size(); ++i) {
            bench.run(options.connections[i], i == 0 && options.churn_percent > 0);
        }
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-push failed: %s\n", error.what());
        report_failure("1 throughput", "run", error.what());
        return 1;
    }
    return 0;
}
