// bench-delivery: figure 3, what the plugin costs a mail delivery.
//
// Two Dovecots run side by side from the same build: one with the mail
// plugins notify, push_notification and xaps (and the worker pushing to the
// mock APNs, every recipient registered), one without any mail plugin. Rounds
// alternate between them so that both see the same machine load; in each,
// a few LMTP connections deliver back to back (closed loop) for a fixed time.
// Reported: deliveries per second of each (median over rounds) and the cost.
#include "bench-devices.h"
#include "bench-environment.h"
#include "bench-report.h"
#include "lmtp-client.h"
#include "process-stats.h"
#include "xaps-error.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;

constexpr std::size_t recipients = 16;
constexpr unsigned connections = 4;

struct Options {
    unsigned rounds = 7;
    std::chrono::milliseconds round_time{2500};
};

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--rounds") == 0) {
            options.rounds = static_cast<unsigned>(std::atoi(argv[i + 1]));
        } else if (std::strcmp(argv[i], "--round-ms") == 0) {
            options.round_time = std::chrono::milliseconds(std::atoi(argv[i + 1]));
        } else {
            std::fprintf(stderr, "usage: bench-delivery [--rounds N] [--round-ms N]\n");
            std::exit(2);
        }
    }
    return options;
}

constexpr const char *lmtp_binary = "/usr/lib/dovecot/lmtp";

struct Deliveries {
    std::size_t count = 0;
    double per_second = 0;
    double lmtp_cpu_us = 0;   // CPU of the instance's lmtp processes per delivery
    double worker_cpu_us = 0; // CPU of its worker per delivery (0 without one)
};

// A running Dovecot and the processes whose CPU time is counted.
struct Instance {
    std::unique_ptr<test::DovecotInstance> dovecot;
    pid_t master = 0;
    pid_t worker = 0;
};

// Delivers back to back over `connections` LMTP connections for `duration`.
Deliveries deliver_for(const Instance &instance, std::chrono::milliseconds duration) {
    const test::DovecotInstance &dovecot = *instance.dovecot;
    std::atomic<std::size_t> delivered{0};
    std::mutex failure_mutex;
    std::string failure;
    // LMTP processes started for earlier rounds are reused, as in production.
    const auto lmtp_before = total_cpu(children_of(instance.master, lmtp_binary));
    const auto worker_before = total_cpu({instance.worker});
    const auto start = Clock::now();
    const auto stop = start + duration;
    std::vector<std::thread> threads;
    for (unsigned c = 0; c < connections; ++c) {
        threads.emplace_back([&, c] {
            try {
                test::LmtpClient mta(dovecot.lmtp_port());
                for (std::size_t k = c; Clock::now() < stop; k += connections) {
                    const std::string rcpt = device_user(k % recipients) + "@example.com";
                    auto reply = mta.deliver("sender@example.net", rcpt,
                                             test::make_test_message("sender@example.net", rcpt,
                                                                     "Rate", "A short mail.\n"));
                    if (reply.code != 250) {
                        throw Error(ErrorKind::unavailable, "delivery refused: " + reply.text());
                    }
                    ++delivered;
                }
            } catch (const std::exception &error) {
                std::lock_guard lock(failure_mutex);
                failure = error.what();
            }
        });
    }
    for (auto &thread : threads) {
        thread.join();
    }
    if (!failure.empty()) {
        throw Error(ErrorKind::unavailable, failure);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    Deliveries result;
    result.count = delivered;
    result.per_second = static_cast<double>(delivered) / seconds;
    const auto per_delivery = [&](std::chrono::nanoseconds cpu) {
        return std::chrono::duration<double, std::micro>(cpu).count() /
               static_cast<double>(std::max<std::size_t>(delivered, 1));
    };
    result.lmtp_cpu_us =
        per_delivery(total_cpu(children_of(instance.master, lmtp_binary)) - lmtp_before);
    if (instance.worker > 0) {
        result.worker_cpu_us = per_delivery(total_cpu({instance.worker}) - worker_before);
    }
    return result;
}

Instance start_dovecot(std::uint16_t apns_port, bool with_plugin) {
    auto options = dovecot_options(apns_port, with_plugin);
    options.enable_worker = with_plugin;
    for (std::size_t i = 0; i < recipients; ++i) {
        options.extra_users.push_back(device_user(i));
    }
    Instance instance;
    instance.dovecot = std::make_unique<test::DovecotInstance>(options);
    if (with_plugin) {
        populate_store(instance.dovecot->db_path(), 0, recipients, instance.dovecot->worker_user());
    }
    instance.dovecot->start();
    instance.master = instance.dovecot->master_pid();
    if (with_plugin) {
        instance.worker = wait_for_worker_process();
    }
    return instance;
}

void check_log(const test::DovecotInstance &dovecot) {
    if (auto problems = dovecot.log_problems(); !problems.empty()) {
        throw Error(ErrorKind::internal, "Dovecot logged: " + problems.front());
    }
}

} // namespace

int main(int argc, char **argv) {
    require_root("bench-delivery");
    const Options options = parse_options(argc, argv);
    try {
        MockApnsServer mock(mock_config());
        mock.start();
        auto with_plugin = start_dovecot(mock.port(), true);
        auto without_plugin = start_dovecot(mock.port(), false);
        // Warm up both: LMTP processes, mailboxes, the worker connection.
        deliver_for(with_plugin, options.round_time / 4);
        deliver_for(without_plugin, options.round_time / 4);

        const std::size_t pushes_before = mock.requests_received();
        std::vector<double> with_rates, without_rates, costs, lmtp_cpu_with, lmtp_cpu_without,
            worker_cpu;
        std::size_t delivered_with_plugin = 0;
        for (unsigned round = 0; round < options.rounds; ++round) {
            // Alternate which goes first, so neither always follows the other.
            Deliveries with_result;
            Deliveries without_result;
            if (round % 2 == 0) {
                with_result = deliver_for(with_plugin, options.round_time);
                without_result = deliver_for(without_plugin, options.round_time);
            } else {
                without_result = deliver_for(without_plugin, options.round_time);
                with_result = deliver_for(with_plugin, options.round_time);
            }
            const double with = with_result.per_second;
            const double without = without_result.per_second;
            delivered_with_plugin += with_result.count;
            lmtp_cpu_with.push_back(with_result.lmtp_cpu_us);
            lmtp_cpu_without.push_back(without_result.lmtp_cpu_us);
            worker_cpu.push_back(with_result.worker_cpu_us);
            with_rates.push_back(with);
            without_rates.push_back(without);
            costs.push_back(1 - with / without);
            progress("figure 3: round " + std::to_string(round + 1) + ": with plugin " +
                     fixed(with, 0) + "/s, without " + fixed(without, 0) + "/s (cost " +
                     fixed(100 * costs.back(), 1) + "%); lmtp CPU per delivery " +
                     fixed(with_result.lmtp_cpu_us, 0) + " vs " +
                     fixed(without_result.lmtp_cpu_us, 0) + " us, worker " +
                     fixed(with_result.worker_cpu_us, 1) + " us (load " + fixed(load_average(), 1) +
                     ")");
        }
        mock.wait_for_requests(pushes_before + delivered_with_plugin, std::chrono::seconds(2));
        const std::size_t pushes = mock.requests_received() - pushes_before;
        with_plugin.dovecot->stop();
        without_plugin.dovecot->stop();
        check_log(*with_plugin.dovecot);
        check_log(*without_plugin.dovecot);

        const double cost = median(costs);
        report("3 delivery cost", "LMTP deliveries/s with plugin", median(with_rates),
               "deliveries/s");
        report("3 delivery cost", "LMTP deliveries/s without plugin", median(without_rates),
               "deliveries/s");
        report("3 delivery cost", "cost of the plugin (median of paired rounds)", 100 * cost, "%",
               "< 5%", at_most(cost, 0.05));
        const double cpu_with = median(lmtp_cpu_with);
        const double cpu_without = median(lmtp_cpu_without);
        report("3 delivery cost", "lmtp CPU per delivery with plugin", cpu_with, "us");
        report("3 delivery cost", "lmtp CPU per delivery without plugin", cpu_without, "us");
        report("3 delivery cost", "CPU cost of the plugins in lmtp",
               100 * (cpu_with - cpu_without) / cpu_without, "%");
        report("3 delivery cost", "worker CPU per delivery", median(worker_cpu), "us");
        // Below 100% when a device's push was still in flight for the
        // previous mail: the scheduler then merges them (by design).
        report("3 delivery cost", "pushes per delivery with plugin",
               100.0 * static_cast<double>(pushes) /
                   static_cast<double>(std::max<std::size_t>(delivered_with_plugin, 1)),
               "%");
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-delivery failed: %s\n", error.what());
        report_failure("3 delivery cost", "run", error.what());
        return 1;
    }
    return 0;
}
