// bench-latency: figure 2, end-to-end push latency with a real Dovecot.
//
// An MTA (LMTP over TCP, a few connections) delivers mail at a fixed rate
// (open loop: delivery k is due at start + k / rate, whatever happened to
// the ones before) to users whose iPhones are registered. The latency of a
// delivery is from the moment its final "." is written to the moment the mock
// APNs server has received the push for that user's device. Reported: p50
// and p99 per rate, and to tell where the time goes, the same percentiles of
// (a) the LMTP reply to the "." and (b) the worker alone: a NOTIFY written
// straight to the worker socket until the push arrives.
#include "bench-devices.h"
#include "bench-environment.h"
#include "bench-report.h"
#include "lmtp-client.h"
#include "process-stats.h"
#include "xaps-error.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;

constexpr std::size_t recipients = 16; // users bench0..bench15
constexpr unsigned senders = 4;        // concurrent LMTP connections

struct Step {
    unsigned rate; // deliveries per second
    unsigned count;
};

struct Options {
    std::vector<Step> steps{{1, 20}, {10, 150}, {100, 1000}};
};

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: bench-latency [--steps RATE:COUNT[,RATE:COUNT...]]\n");
    std::exit(2);
}

Options parse_options(int argc, char **argv) {
    Options options;
    if (argc == 3 && std::strcmp(argv[1], "--steps") == 0) {
        options.steps.clear();
        std::istringstream list(argv[2]);
        for (std::string item; std::getline(list, item, ',');) {
            Step step{};
            const auto colon = item.find(':');
            if (colon == std::string::npos ||
                std::from_chars(item.data(), item.data() + colon, step.rate).ec != std::errc() ||
                std::from_chars(item.data() + colon + 1, item.data() + item.size(), step.count)
                        .ec != std::errc() ||
                step.rate == 0 || step.count == 0) {
                usage();
            }
            options.steps.push_back(step);
        }
    } else if (argc != 1) {
        usage();
    }
    return options;
}

double milliseconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double, std::milli>(to - from).count();
}

struct Sent {
    std::size_t device = 0;
    Clock::time_point at{};    // the final "." (or the NOTIFY) written
    Clock::time_point reply{}; // the LMTP reply to it read
};

// Pairs each sending with the first push for its device received after it.
// Returns the latencies in ms; sendings without a push are counted in `lost`.
std::vector<double> match_pushes(const std::vector<Sent> &sent,
                                 const std::vector<MockApnsRequest> &pushes, std::size_t &lost) {
    std::map<std::string, std::vector<Clock::time_point>> by_token;
    for (const auto &push : pushes) {
        by_token[push.device_token].push_back(push.received);
    }
    std::map<std::string, std::size_t> next;
    std::vector<Sent> ordered = sent;
    std::sort(ordered.begin(), ordered.end(),
              [](const Sent &a, const Sent &b) { return a.at < b.at; });
    std::vector<double> latencies;
    lost = 0;
    for (const auto &one : ordered) {
        const std::string token = device_token(one.device);
        auto &times = by_token[token];
        std::size_t &index = next[token];
        while (index < times.size() && times[index] < one.at) {
            ++index;
        }
        if (index == times.size()) {
            ++lost;
            continue;
        }
        latencies.push_back(milliseconds_between(one.at, times[index++]));
    }
    return latencies;
}

// Deliveries at `rate` per second from `senders` LMTP connections.
std::vector<Sent> deliver_at_rate(const test::DovecotInstance &dovecot, const Step &step) {
    std::vector<Sent> sent(step.count);
    std::mutex failure_mutex;
    std::string failure;
    const auto start = Clock::now() + std::chrono::milliseconds(50);
    const auto interval = std::chrono::duration<double>(1.0 / step.rate);
    std::vector<std::thread> threads;
    for (unsigned sender = 0; sender < senders; ++sender) {
        threads.emplace_back([&, sender] {
            try {
                test::LmtpClient mta(dovecot.lmtp_port());
                Clock::time_point data_sent{};
                mta.set_trace([&data_sent](test::TraceDirection direction, std::string_view line) {
                    if (direction == test::TraceDirection::to_server &&
                        line.starts_with("<message")) {
                        data_sent = Clock::now();
                    }
                });
                for (std::size_t k = sender; k < step.count; k += senders) {
                    std::this_thread::sleep_until(
                        start + std::chrono::duration_cast<Clock::duration>(interval * k));
                    const std::size_t device = k % recipients;
                    const std::string rcpt = device_user(device) + "@example.com";
                    auto reply = mta.deliver("sender@example.net", rcpt,
                                             test::make_test_message("sender@example.net", rcpt,
                                                                     "Latency", "A short mail.\n"));
                    if (reply.code != 250) {
                        throw Error(ErrorKind::unavailable, "delivery refused: " + reply.text());
                    }
                    sent[k] = Sent{device, data_sent, Clock::now()};
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
    return sent;
}

// NOTIFYs at `rate` per second straight to the worker, one at a time.
std::vector<Sent> notify_at_rate(const test::DovecotInstance &dovecot, const Step &step) {
    test::WorkerClient worker(dovecot.worker_socket_path());
    std::vector<Sent> sent;
    const auto start = Clock::now();
    const auto interval = std::chrono::duration<double>(1.0 / step.rate);
    for (std::size_t k = 0; k < step.count; ++k) {
        std::this_thread::sleep_until(start +
                                      std::chrono::duration_cast<Clock::duration>(interval * k));
        const std::size_t device = k % recipients;
        const auto at = Clock::now();
        const auto replies = worker.request({"NOTIFY", device_user(device), "INBOX", "MessageNew"});
        if (!replies.back().ok()) {
            throw Error(ErrorKind::unavailable, "NOTIFY failed: " + replies.back().line);
        }
        sent.push_back(Sent{device, at, Clock::now()});
    }
    return sent;
}

std::vector<double> reply_latencies(const std::vector<Sent> &sent) {
    std::vector<double> latencies;
    for (const auto &one : sent) {
        latencies.push_back(milliseconds_between(one.at, one.reply));
    }
    return latencies;
}

void settle(MockApnsServer &mock, std::size_t expected) {
    mock.wait_for_requests(expected, std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

test::DovecotOptions latency_dovecot_options(std::uint16_t apns_port) {
    auto options = dovecot_options(apns_port, true);
    for (std::size_t i = 0; i < recipients; ++i) {
        options.extra_users.push_back(device_user(i));
    }
    return options;
}

// Where the time goes: the same deliveries with Dovecot told not to fsync
// the mail it saves (never do this in production). What is left is the
// delivery's CPU work, the plugin and the worker.
void diagnose_without_fsync(MockApnsServer &mock, const Step &step) {
    auto options = latency_dovecot_options(mock.port());
    options.extra_config = "mail_fsync = never";
    test::DovecotInstance dovecot(options);
    populate_store(dovecot.db_path(), 0, recipients, dovecot.worker_user());
    dovecot.start();
    mock.wait_for_open_connections(1, std::chrono::seconds(10));
    mock.clear_requests();
    deliver_at_rate(dovecot, Step{50, 2 * recipients});
    settle(mock, 2 * recipients);
    mock.clear_requests();
    const auto sent = deliver_at_rate(dovecot, step);
    settle(mock, step.count);
    std::size_t lost = 0;
    const auto latencies = match_pushes(sent, mock.requests(), lost);
    const std::string rate = std::to_string(step.rate) + "/s";
    progress("  diagnosis, mail_fsync = never: \".\" -> push " +
             describe_distribution(latencies, "ms"));
    report("2 latency", "diagnosis, mail_fsync=never: \".\" -> push p50 at " + rate,
           percentile(latencies, 0.5), "ms");
    report("2 latency", "diagnosis, mail_fsync=never: \".\" -> push p99 at " + rate,
           percentile(latencies, 0.99), "ms");
    dovecot.stop();
}

} // namespace

int main(int argc, char **argv) {
    require_root("bench-latency");
    const Options options = parse_options(argc, argv);
    try {
        MockApnsServer mock(mock_config(1000, true));
        mock.start();
        test::DovecotInstance dovecot(latency_dovecot_options(mock.port()));
        populate_store(dovecot.db_path(), 0, recipients, dovecot.worker_user());
        dovecot.start();
        const pid_t worker = wait_for_worker_process();
        if (!mock.wait_for_open_connections(1, std::chrono::seconds(10))) {
            throw Error(ErrorKind::unavailable, "the worker did not connect to the mock APNs");
        }
        // Warm up: every LMTP process, mailbox and the worker connection exist.
        deliver_at_rate(dovecot, Step{50, 2 * recipients});
        settle(mock, 2 * recipients);

        for (const Step &step : options.steps) {
            const std::string rate = std::to_string(step.rate) + "/s";
            progress("figure 2: " + std::to_string(step.count) + " deliveries at " + rate);
            mock.clear_requests();
            const auto sent = deliver_at_rate(dovecot, step);
            settle(mock, step.count);
            std::size_t lost = 0;
            const auto latencies = match_pushes(sent, mock.requests(), lost);
            const auto replies = reply_latencies(sent);
            progress("  \".\" -> push at the mock: " + describe_distribution(latencies, "ms") +
                     (lost > 0 ? ", " + std::to_string(lost) + " without a push" : ""));
            progress("  \".\" -> LMTP reply:       " + describe_distribution(replies, "ms"));

            mock.clear_requests();
            const CpuTime cpu_before = process_cpu(worker);
            const auto notified = notify_at_rate(dovecot, step);
            settle(mock, step.count);
            const double cpu_per_push = std::chrono::duration<double, std::micro>(
                                            process_cpu(worker).precise - cpu_before.precise)
                                            .count() /
                                        static_cast<double>(step.count);
            std::size_t notify_lost = 0;
            const auto worker_only = match_pushes(notified, mock.requests(), notify_lost);
            progress("  NOTIFY -> push (worker only): " + describe_distribution(worker_only, "ms") +
                     " (load " + fixed(load_average(), 1) + ")");

            const bool judged = step.rate == 100;
            const double p50 = percentile(latencies, 0.5);
            const double p99 = percentile(latencies, 0.99);
            report("2 latency", "LMTP \".\" -> push p50 at " + rate, p50, "ms",
                   judged ? "< 1 ms" : "", judged ? at_most(p50, 1) : Verdict::info);
            report("2 latency", "LMTP \".\" -> push p99 at " + rate, p99, "ms",
                   judged ? "< 5 ms" : "", judged ? at_most(p99, 5) : Verdict::info);
            report("2 latency", "LMTP \".\" -> LMTP reply p50 at " + rate, percentile(replies, 0.5),
                   "ms");
            report("2 latency", "worker only: NOTIFY -> push p50 at " + rate,
                   percentile(worker_only, 0.5), "ms");
            report("2 latency", "worker only: NOTIFY -> push p99 at " + rate,
                   percentile(worker_only, 0.99), "ms");
            report("2 latency", "worker CPU per push, one NOTIFY at a time at " + rate,
                   cpu_per_push, "us");
            if (lost + notify_lost > 0) {
                report("2 latency", "deliveries without a push at " + rate,
                       static_cast<double>(lost + notify_lost), "deliveries");
            }
        }
        dovecot.stop();
        if (auto problems = dovecot.log_problems(); !problems.empty()) {
            throw Error(ErrorKind::internal, "Dovecot logged: " + problems.front());
        }
        diagnose_without_fsync(mock, options.steps.back());
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-latency failed: %s\n", error.what());
        report_failure("2 latency", "run", error.what());
        return 1;
    }
    return 0;
}
