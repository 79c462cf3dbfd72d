// A load run, not part of the test suites (scripts/load-test.sh runs it):
// a real Dovecot with the plugin and worker, SESSIONS concurrent IMAP
// sessions, while mail is delivered over LMTP and the mock APNs server takes
// the pushes, for SECONDS. Two modes:
//   renew: each session re-registers its device every second or two (with
//     changing mailbox sets); Dovecot's process and client limits are raised
//     for the run.
//   idle: each session registers once and then IDLEs, as an iPhone's does;
//     Dovecot's own limits are raised for the sessions, the worker's
//     client_limit is the shipped one. Every delivery
//     must reach, as a push, every device its user had registered before it.
// Prints errors, latencies, the worker's memory over time and whether every
// registration that got OK is present at the end. Exits 1 when anything went
// wrong.
//
// Usage: xaps-load-test [SESSIONS=500] [SECONDS=120] [MAILS_PER_SECOND=20] [renew|idle]
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
#include <sstream>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using Clock = std::chrono::steady_clock;

constexpr int sessions_per_user = 5;

struct Delivery {
    std::string user;
    Clock::time_point started;
};

struct Stats {
    std::mutex mutex;
    std::vector<double> register_ms;
    std::vector<double> delivery_ms;
    std::vector<Delivery> deliveries_done;                     // answered 250
    std::map<std::string, Clock::time_point> registered_at;    // token -> first OK
    std::map<std::string, std::vector<std::string>> tokens_of; // user -> tokens
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

// IDLE until `end`: the server's untagged lines are read and dropped.
void idle_until(ImapClient &imap, Clock::time_point end, Stats &stats) {
    imap.send_raw("I1 IDLE\r\n");
    if (std::string line = imap.read_line(); !line.starts_with("+")) {
        stats.error("idle: " + line);
        return;
    }
    imap.set_timeout(std::chrono::milliseconds(1000));
    while (Clock::now() < end) {
        try {
            imap.read_line();
        } catch (const std::exception &) {
            // nothing within a second: still idling
        }
    }
    imap.set_timeout(std::chrono::milliseconds(30000));
    imap.send_raw("DONE\r\n");
    ImapResponse done = imap.read_response("I1");
    if (!done.ok()) {
        stats.error("idle: " + done.tagged);
    }
}

void run_session(const DovecotInstance &dovecot, int index, Clock::time_point end, bool idle,
                 unsigned login_spread_ms, Stats &stats) {
    const std::string user = "load" + std::to_string(index / sessions_per_user);
    std::mt19937 random(unsigned(index) * 7919u + 1u);
    try {
        // Spread the logins over the first seconds, as phones would come:
        // 25 a second, which a loaded 2-core machine forks imap-login and
        // imap processes for.
        std::this_thread::sleep_for(std::chrono::milliseconds(random() % login_spread_ms));
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
                if (stats.registered_at.emplace(phone.device_token, Clock::now()).second) {
                    stats.tokens_of[user].push_back(phone.device_token);
                }
            } else {
                stats.error("register: " + reply.tagged.substr(reply.tag.size() + 1));
            }
            if (idle) {
                idle_until(imap, end, stats);
                break;
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
                stats.deliveries_done.push_back({rcpt.substr(0, rcpt.find('@')), started});
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
    const std::string mode = argc > 4 ? argv[4] : "renew";
    if (mode != "renew" && mode != "idle") {
        std::fprintf(stderr, "usage: xaps-load-test [SESSIONS] [SECONDS] [MAILS_PER_SECOND] "
                             "[renew|idle]\n");
        return 2;
    }
    const bool idle = mode == "idle";
    const unsigned login_spread_ms = std::max(5000u, unsigned(sessions) * 40u);
    const int users = (sessions + sessions_per_user - 1) / sessions_per_user;

    MockApnsConfig mock_config = e2e::mock_apns_config();
    MockApnsServer apns(mock_config);
    apns.start();
    DovecotOptions options = dovecot_options(apns.port());
    for (int u = 0; u < users; u++) {
        options.extra_users.push_back("load" + std::to_string(u));
    }
    if (idle) {
        // One imap process per session, and Dovecot's own services (log,
        // anvil, auth) taking one connection from each process: Dovecot's
        // limits, which an admin with this many sessions raises. The
        // worker's client_limit is the shipped one (service xaps sets its own).
        options.extra_config =
            "default_client_limit = " + std::to_string(2 * sessions + 200) +
            "\nservice imap {\n  process_limit = " + std::to_string(sessions + 100) + "\n}\n";
    } else {
        // One imap process per session, and room for all of them.
        options.extra_config = "default_process_limit = " + std::to_string(sessions + 200) +
                               "\ndefault_client_limit = " + std::to_string(2 * sessions + 200) +
                               "\nmail_max_userip_connections = 1000\n";
    }
    DovecotInstance dovecot(options);
    dovecot.start();
    const pid_t worker = worker_pid(dovecot);
    std::printf("load: %s, %d sessions (%d users), %d s, %d mails/s; worker pid %d, RSS %ld KiB\n",
                mode.c_str(), sessions, users, seconds, mails_per_second, int(worker),
                process_rss_kib(worker));
    std::fflush(stdout);

    Stats stats;
    const auto started = Clock::now();
    const auto end = started + std::chrono::seconds(seconds);
    std::vector<std::thread> threads;
    for (int i = 0; i < sessions; i++) {
        threads.emplace_back(
            [&, i] { run_session(dovecot, i, end, idle, login_spread_ms, stats); });
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
    if (idle) {
        // Every delivery reached every device its user had registered before
        // the delivery started: a push to that device received after then.
        const bool settled = eventually(
            [&] {
                const std::size_t before = apns.requests_received();
                std::this_thread::sleep_for(std::chrono::seconds(2));
                return apns.requests_received() == before;
            },
            std::chrono::seconds(60));
        std::map<std::string, std::vector<Clock::time_point>> pushed_at;
        for (const auto &push : apns.requests()) {
            pushed_at[push.device_token].push_back(push.received);
        }
        std::size_t expected = 0;
        std::size_t unpushed = 0;
        for (const auto &delivery : stats.deliveries_done) {
            for (const auto &token : stats.tokens_of[delivery.user]) {
                if (stats.registered_at[token] >= delivery.started) {
                    continue;
                }
                expected++;
                const auto &times = pushed_at[token];
                if (std::none_of(times.begin(), times.end(),
                                 [&](auto t) { return t >= delivery.started; })) {
                    unpushed++;
                }
            }
        }
        std::printf("load: %zu (delivery, registered device) pairs, %zu without a push after "
                    "the delivery%s\n",
                    expected, unpushed, settled ? "" : " (pushes still arriving after 60 s)");
        problems += unpushed > 0 || !settled ? 1 : 0;
        const std::string log = dovecot.log();
        if (log.find("client_limit") != std::string::npos) {
            std::printf("load: the log names client_limit\n");
            problems++;
        }
    }
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
    // Warnings and errors, each kind once: a limit of Dovecot's own says so here.
    std::set<std::string> kinds;
    std::istringstream log_lines(dovecot.log());
    for (std::string line; std::getline(log_lines, line);) {
        const auto level = line.find(": Warning: ") != std::string::npos ? line.find(": Warning: ")
                                                                         : line.find(": Error: ");
        if (level != std::string::npos &&
            kinds.insert(line.substr(level, std::min<std::size_t>(60, line.size() - level)))
                .second) {
            std::printf("load: log: %s\n", line.c_str());
        }
    }
    const auto log_problems = dovecot.log_problems();
    for (const auto &line : log_problems) {
        std::printf("load: log: %s\n", line.c_str());
    }
    problems += log_problems.empty() ? 0 : 1;
    std::printf("load: %ld errors, %zu Panic/Fatal log lines: %s\n", error_count,
                log_problems.size(), problems == 0 ? "OK" : "PROBLEMS");
    return problems == 0 ? 0 : 1;
}
