// The worker's connections from mail processes on a big server: more than
// Dovecot's default client_limit (1000) of them at once, each costing the
// worker little, and none held by a session that has nothing to say.
#include "e2e-fixture.h"
#include "e2e-processes.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace xaps::test;
using e2e::push_timeout;

// More than the 1000 connections Dovecot's default client_limit allows.
constexpr std::size_t peer_count = 1200;
// What one idle connection may cost the worker.
constexpr long idle_connection_target_kib = 16;

// Debian's dovecot.service runs Dovecot with LimitNOFILE=65535, and every
// process of Dovecot's inherits it; the test's own shell may have less.
// The test holds one descriptor per simulated peer as well.
void use_the_service_fd_limit() {
    struct rlimit limit {};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
    const rlim_t wanted = std::min<rlim_t>(limit.rlim_max, 65535);
    ASSERT_GE(wanted, rlim_t{2 * peer_count + 200})
        << "the hard fd limit (" << limit.rlim_max << ") is too low for this test";
    limit.rlim_cur = std::max(limit.rlim_cur, wanted);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
}

std::map<std::string, std::string> status_rows(const DovecotInstance &dovecot) {
    std::map<std::string, std::string> rows;
    for (const WireReply &reply : WorkerClient(dovecot.admin_socket_path()).request({"STATUS"})) {
        if (reply.is_row() && reply.fields.size() == 2) {
            rows[reply.fields[0]] = reply.fields[1];
        }
    }
    return rows;
}

// Connections the worker holds, by its STATUS (the asking one included).
std::size_t worker_connections(const DovecotInstance &dovecot) {
    const auto rows = status_rows(dovecot);
    auto it = rows.find("connections");
    return it == rows.end() ? 0 : std::stoul(it->second);
}

// What every warning about the mail services' process limits says.
constexpr const char *process_limit_warning =
    "service xaps { client_limit=4096 } is lower than required under max. load";

std::size_t occurrences(const std::string &text, const std::string &part) {
    std::size_t count = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) {
        ++count;
    }
    return count;
}

class E2eWorkerConnections : public e2e::E2eTest {};

// The shipped client_limit: past Dovecot's default of 1000 simulated mail
// processes hold a connection each (handshake done, idle, as an imap process
// between commands), and a real IMAP registration and an LMTP delivery still
// get through, with no connection dropped by the master.
TEST_F(E2eWorkerConnections, PastAThousandMailProcessConnectionsRegistrationAndPushStillWork) {
    use_the_service_fd_limit();
    start_dovecot(options());
    EXPECT_EQ(status_rows(*dovecot_)["client_limit"], "4096");
    const pid_t worker = e2e::worker_pid(*dovecot_);
    ASSERT_GT(worker, 0) << dovecot_->log();

    std::vector<std::unique_ptr<WorkerClient>> peers;
    peers.reserve(peer_count);
    auto connect_peers = [&](std::size_t until) {
        while (peers.size() < until) {
            peers.push_back(std::make_unique<WorkerClient>(dovecot_->worker_socket_path()));
        }
    };
    // The first connections warm up the worker's allocator; the cost of the
    // rest is what a connection costs.
    connect_peers(200);
    const long rss_before = e2e::process_rss_kib(worker);
    connect_peers(peer_count);
    const long rss_after = e2e::process_rss_kib(worker);
    ASSERT_GE(worker_connections(*dovecot_), peer_count + 1) << dovecot_->log();

    const double per_connection_kib =
        static_cast<double>(rss_after - rss_before) / static_cast<double>(peer_count - 200);
    const bool met = per_connection_kib <= static_cast<double>(idle_connection_target_kib);
    std::printf("worker memory per idle mail-process connection: %.1f KiB (target <= %ld KiB): "
                "%s\n",
                per_connection_kib, idle_connection_target_kib, met ? "met" : "NOT met");
    RecordProperty("idle_connection_kib", std::to_string(per_connection_kib));

    auto imap = login("alice");
    register_phone(*imap, e2e::PhoneRegistration{});
    ASSERT_EQ(registrations("alice").size(), 1u);
    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(wait_for_pushes(1)) << dovecot_->log();
    EXPECT_EQ(pushes().at(0).path, std::string("/3/device/") + e2e::iphone_device_token);

    // The peers are still served: each one of them answers like a new one.
    for (std::size_t i : {std::size_t{0}, peer_count / 2, peer_count - 1}) {
        const std::vector<WireReply> replies = peers[i]->request({"LIST", "alice"});
        ASSERT_FALSE(replies.empty());
        // LIST is an admin command: a mail peer is refused, by the worker.
        EXPECT_TRUE(replies.back().failed()) << describe(replies);
        EXPECT_EQ(replies.back().fields.at(0), "forbidden") << describe(replies);
    }

    const std::string log = dovecot_->log();
    EXPECT_EQ(log.find("client_limit"), std::string::npos) << log;
    if (!sanitizer_run()) {
        // Generous: a connection that buffered a whole line would cost more
        // than this, an idle one much less. The figure itself is printed.
        EXPECT_LE(per_connection_kib, 4.0 * static_cast<double>(idle_connection_target_kib));
    }
}

// An IMAP session that has nothing to send gives its worker connection back,
// so that idle sessions do not count against client_limit, and gets it again
// when it has something to say.
TEST_F(E2eWorkerConnections, AnIdleSessionGivesUpItsConnectionAndReconnectsWhenNeeded) {
    start_dovecot(options());
    auto imap = login("alice");
    register_phone(*imap, e2e::PhoneRegistration{});
    // The imap process's connection and the one asking.
    EXPECT_GE(worker_connections(*dovecot_), 2u);

    // Only the connection asking is left once the plugin closed its idle one
    // (30 s with nothing in flight).
    EXPECT_TRUE(eventually([&] { return worker_connections(*dovecot_) == 1; }, 3 * push_timeout))
        << "worker connections: " << worker_connections(*dovecot_) << "\n"
        << dovecot_->log();
    EXPECT_TRUE(imap->command("NOOP").ok());

    e2e::PhoneRegistration renewed;
    renewed.mailboxes = {"INBOX", "Sent Messages"};
    register_phone(*imap, renewed);
    const auto stored = registrations("alice");
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0].mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));

    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(wait_for_pushes(1)) << dovecot_->log();

    // Dovecot's default imap process_limit (1024) fits the shipped
    // client_limit: the imap process announced it more than 30 s ago (and
    // again on reconnecting), and the worker said nothing about it.
    const std::string log = dovecot_->log();
    EXPECT_EQ(log.find(process_limit_warning), std::string::npos) << log;
}

// The worker cannot read the imap and lmtp services' settings: their
// processes announce their process_limit (HELLO), and the worker warns as
// soon as what it heard adds up to more than its client_limit, once per sum.
TEST_F(E2eWorkerConnections, ProcessLimitsPastTheClientLimitAreWarnedAboutOncePerSum) {
    DovecotOptions settings = options();
    settings.extra_config += "service imap {\n  process_limit = 5000\n}\n"
                             "service lmtp {\n  process_limit = 200\n}\n";
    start_dovecot(std::move(settings));
    const std::string imap_warning =
        "service xaps { client_limit=4096 } is lower than required under max. load "
        "(5000): each mail process holds a connection to the worker while it is busy, "
        "and past client_limit the master drops new ones and the pushes they carry are "
        "lost. Counted for the services whose processes connected: service imap { "
        "process_limit=5000 }. Raise service xaps { client_limit } to at least 5000 "
        "(Dovecot's fd limit, ulimit -n or LimitNOFILE, must allow as many)";
    const std::string imap_and_lmtp_warning =
        "service xaps { client_limit=4096 } is lower than required under max. load "
        "(5200): each mail process holds a connection to the worker while it is busy, "
        "and past client_limit the master drops new ones and the pushes they carry are "
        "lost. Counted for the services whose processes connected: service imap { "
        "process_limit=5000 } + service lmtp { process_limit=200 }. Raise service xaps "
        "{ client_limit } to at least 5200 (Dovecot's fd limit, ulimit -n or "
        "LimitNOFILE, must allow as many)";

    auto imap = login("alice");
    register_phone(*imap, e2e::PhoneRegistration{});
    EXPECT_TRUE(
        eventually([&] { return occurrences(dovecot_->log(), imap_warning) == 1; }, push_timeout))
        << dovecot_->log();

    // Another imap process (one per session) announces the same limit.
    auto second_imap = login("bob");
    e2e::PhoneRegistration bobs_phone;
    bobs_phone.device_token = e2e::device_token(2);
    register_phone(*second_imap, bobs_phone);

    // An lmtp process adds its service's limit: the sum grew, so once more.
    // It connects after the second imap process's HELLO was written, so the
    // worker has read that by the time this warning is logged.
    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(wait_for_pushes(1)) << dovecot_->log();
    EXPECT_TRUE(eventually([&] { return occurrences(dovecot_->log(), imap_and_lmtp_warning) == 1; },
                           push_timeout))
        << dovecot_->log();

    const std::string log = dovecot_->log();
    EXPECT_EQ(occurrences(log, imap_warning), 1u) << log;
    EXPECT_EQ(occurrences(log, process_limit_warning), 2u) << log;
}

} // namespace
