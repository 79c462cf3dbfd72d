// A load run, not part of the test suites (scripts/load-test.sh runs it):
// a real Dovecot with the plugin and worker, SESSIONS concurrent IMAP
// sessions that register a device and re-register it every second or two
// (with changing mailbox sets) for SECONDS, while mail is delivered over
// LMTP and the mock APNs server takes the pushes. Prints errors, latencies,
// the worker's memory over time and whether every registration that got OK
// is present at the end. Exits 1 when anything went wrong.
//
// Usage: xaps-load-test [SESSIONS=500] [SECONDS=120] [MAILS_PER_SECOND=20]
#include "e2e-fixture.h"
#include "e2e-processes.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using Clock = std::chrono::steady_clock;

constexpr int sessions_per_user = 5;

struct Stats {
    std::mutex mutex;
    std::vector<double> register_ms;
    std::vector<double> delivery_ms;
    std::map<std::string, int> errors; // first words of what went wrong, counted
    std::set<std::pair<std::string, std::string>> registered; // (user, token) that got OK
    std::atomic<long> registrations{0};
    std::atomic<long> deliveries{0};

    void error(const std::string &what) {
        std::lock_guard lock(mutex);
        errors[what.substr(0, 120)]++;
    }
};

double percentile(std::vector<double> values, double p) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    return values[std::min(values.size() - 1, std::size_t(p * double(values.size())))];
}

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void run_session(const DovecotInstance &dovecot, int index, Clock::time_point end, Stats &stats) {
    const std::string user = "load" + std::to_string(index / sessions_per_user);
    std::mt19937 random(unsigned(index) * 7919u + 1u);
    try {
        // Spread the logins over the first seconds, as phones would come.
        std::this_thread::sleep_for(std::chrono::milliseconds(random() % 5000));
        ImapClient imap(dovecot.imap_port(), std::chrono::milliseconds(30000));
        ImapResponse login = imap.login(user, DovecotInstance::password);
        if (!login.ok()) {
            stats.error("login: " + login.tagged);
            return;
        }
        PhoneRegistration phone;
        phone.account_id = "account-" + std::to_string(index);
        phone.device_token = device_token(unsigned(index));
        for (int round = 0; Clock::now() < end; round++) {
            phone.mailboxes = round % 2 == 0 ? std::vector<std::string>{"INBOX"}
                                             : std::vector<std::string>{"INBOX", "Sent Messages"};
            const auto started = Clock::now();
            ImapResponse reply = imap.command(xapplepushservice_command(phone));
            const double took = ms_since(started);
            if (reply.ok()) {
                stats.registrations++;
                std::lock_guard lock(stats.mutex);
                stats.register_ms.push_back(took);
                stats.registered.insert({user, phone.device_token});
            } else {
                stats.error("register: " + reply.tagged.substr(reply.tag.size() + 1));
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1000 + random() % 1000));
        }
        imap.command("LOGOUT");
    } catch (const std::exception &error) {
        stats.error(std::string("session: ") + error.what());
    }
}

void run_deliveries(const DovecotInstance &dovecot, int users, int per_second,
                    Clock::time_point end, Stats &stats) {
    std::mt19937 random(99);
    const auto interval = std::chrono::microseconds(1000000 / std::max(1, per_second));
    auto next = Clock::now();
    std::unique_ptr<LmtpClient> lmtp;
    while (Clock::now() < end) {
        std::this_thread::sleep_until(next);
        next += interval;
        const std::string rcpt =
            "load" + std::to_string(random() % unsigned(users)) + "@example.com";
        try {
            if (!lmtp) {
                lmtp = std::make_unique<LmtpClient>(dovecot.lmtp_port());
            }
            const auto started = Clock::now();
            SmtpReply reply =
                lmtp->deliver("sender@example.net", rcpt,
                              make_test_message("sender@example.net", rcpt, "Load", "Hello.\n"));
            const double took = ms_since(started);
            if (reply.code == 250) {
                stats.deliveries++;
                std::lock_guard lock(stats.mutex);
                stats.delivery_ms.push_back(took);
            } else {
                stats.error("delivery: " + reply.text());
            }
        } catch (const std::exception &error) {
            stats.error(std::string("delivery: ") + error.what());
            lmtp.reset();
        }
    }
}

} // namespace

int main(int argc, char **argv) {
    const int sessions = argc > 1 ? std::atoi(argv[1]) : 500;
    const int seconds = argc > 2 ? std::atoi(argv[2]) : 120;
    const int mails_per_second = argc > 3 ? std::atoi(argv[3]) : 20;
    const int users = (sessions + sessions_per_user - 1) / sessions_per_user;

    MockApnsConfig mock_config = e2e::mock_apns_config();
    MockApnsServer apns(mock_config);
    apns.start();
    DovecotOptions options = dovecot_options(apns.port());
    for (int u = 0; u < users; u++) {
        options.extra_users.push_back("load" + std::to_string(u));
    }
    // One imap process per session, and room for all of them.
    options.extra_config = "default_process_limit = " + std::to_string(sessions + 200) +
                           "\ndefault_client_limit = " + std::to_string(2 * sessions + 200) +
                           "\nmail_max_userip_connections = 1000\n";
    DovecotInstance dovecot(options);
    dovecot.start();
    const pid_t worker = worker_pid(dovecot);
    std::printf("load: %d sessions (%d users), %d s, %d mails/s; worker pid %d, RSS %ld KiB\n",
                sessions, users, seconds, mails_per_second, int(worker), process_rss_kib(worker));
    std::fflush(stdout);

    Stats stats;
    const auto started = Clock::now();
    const auto end = started + std::chrono::seconds(seconds);
    std::vector<std::thread> threads;
    for (int i = 0; i < sessions; i++) {
        threads.emplace_back([&, i] { run_session(dovecot, i, end, stats); });
    }
    threads.emplace_back([&] { run_deliveries(dovecot, users, mails_per_second, end, stats); });
    long max_rss = 0;
    while (Clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::seconds(10));
        const pid_t now_worker = worker_pid(dovecot);
        const long rss = process_rss_kib(now_worker);
        max_rss = std::max(max_rss, rss);
        std::printf("load: %3.0f s: %ld registrations, %ld deliveries, %zu pushes, worker pid %d "
                    "RSS %ld KiB\n",
                    ms_since(started) / 1000, stats.registrations.load(), stats.deliveries.load(),
                    apns.requests_received(), int(now_worker), rss);
        std::fflush(stdout);
    }
    for (auto &thread : threads) {
        thread.join();
    }

    int problems = 0;
    const pid_t final_worker = worker_pid(dovecot);
    if (final_worker != worker) {
        std::printf("load: the worker was restarted (pid %d -> %d)\n", int(worker),
                    int(final_worker));
        problems++;
    }
    std::set<std::pair<std::string, std::string>> present;
    for (const auto &registration : WorkerClient(dovecot.admin_socket_path()).list()) {
        present.insert({registration.user, registration.device_token});
    }
    std::size_t missing = 0;
    for (const auto &key : stats.registered) {
        missing += present.contains(key) ? 0 : 1;
    }
    problems += missing > 0 ? 1 : 0;
    std::printf("load: registrations present: %zu of %zu that got OK (%zu missing)\n",
                present.size(), stats.registered.size(), missing);
    std::printf("load: %ld registrations OK, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                stats.registrations.load(), percentile(stats.register_ms, 0.5),
                percentile(stats.register_ms, 0.99), percentile(stats.register_ms, 1.0));
    std::printf("load: %ld deliveries 250, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                stats.deliveries.load(), percentile(stats.delivery_ms, 0.5),
                percentile(stats.delivery_ms, 0.99), percentile(stats.delivery_ms, 1.0));
    std::printf("load: %zu pushes reached the mock APNs; worker RSS %ld KiB at the end, max %ld "
                "KiB\n",
                apns.requests_received(), process_rss_kib(final_worker), max_rss);
    // A push APNs would refuse reaches no phone: it counts as a problem.
    if (apns.requests_refused() > 0) {
        std::printf("load: %zu pushes refused as APNs would refuse them\n",
                    apns.requests_refused());
        problems++;
    }
    long error_count = 0;
    for (const auto &[what, count] : stats.errors) {
        std::printf("load: error x%d: %s\n", count, what.c_str());
        error_count += count;
    }
    problems += error_count > 0 ? 1 : 0;
    dovecot.stop();
    const auto log_problems = dovecot.log_problems();
    for (const auto &line : log_problems) {
        std::printf("load: log: %s\n", line.c_str());
    }
    problems += log_problems.empty() ? 0 : 1;
    std::printf("load: %ld errors, %zu Panic/Fatal log lines: %s\n", error_count,
                log_problems.size(), problems == 0 ? "OK" : "PROBLEMS");
    return problems == 0 ? 0 : 1;
}
