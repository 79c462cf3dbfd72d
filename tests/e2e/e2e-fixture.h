// What the end-to-end suites about registration and notification share: a
// GoogleTest fixture that owns the mock APNs server and one Dovecot, and the
// steps a phone, an MTA and an admin take against them.
#pragma once

#include "e2e-environment.h"
#include "e2e-refusals.h"
#include "eventually.h"
#include "imap-client.h"
#include "lmtp-client.h"
#include "worker-client.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace xaps::test::e2e {

using namespace std::chrono_literals;

// A push that was expected arrives in milliseconds; this only bounds a
// failure, on a loaded machine running sanitizers.
inline constexpr auto push_timeout = 60s;

inline std::string joined(const std::vector<std::string> &lines) {
    std::string text;
    for (const auto &line : lines) {
        text += line + "\n";
    }
    return text;
}

// The n-th test device token: 64 lower-case hex digits, distinct per n.
inline std::string device_token(unsigned n) {
    char suffix[9];
    std::snprintf(suffix, sizeof(suffix), "%08x", n);
    return std::string(iphone_device_token).substr(0, 56) + suffix;
}

// What the phone registers: iOS quotes every key and value.
struct PhoneRegistration {
    std::string account_id = iphone_account_id;
    std::string device_token = iphone_device_token;
    std::vector<std::string> mailboxes{"INBOX"}; // as iOS sends them (modified UTF-7)
    std::string aps_version = "2";
};

inline std::string xapplepushservice_command(const PhoneRegistration &phone) {
    std::string command = "XAPPLEPUSHSERVICE \"aps-version\" " + imap_quote(phone.aps_version) +
                          " \"aps-account-id\" " + imap_quote(phone.account_id) +
                          " \"aps-device-token\" " + imap_quote(phone.device_token) +
                          " \"aps-subtopic\" \"com.apple.mobilemail\" \"mailboxes\" (";
    for (std::size_t i = 0; i < phone.mailboxes.size(); i++) {
        command += (i == 0 ? "" : " ") + imap_quote(phone.mailboxes[i]);
    }
    return command + ")";
}

inline std::optional<Json::Value> parse_json(const std::string &text) {
    Json::CharReaderBuilder builder;
    std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value value;
    std::string errors;
    if (!reader->parse(text.data(), text.data() + text.size(), &value, &errors)) {
        return std::nullopt;
    }
    return value;
}

// The account id a push's body names, or "<...>" describing why there is none.
inline std::string pushed_account_id(const MockApnsRequest &push) {
    std::optional<Json::Value> body = parse_json(push.body);
    if (!body || !body->isObject() || !(*body)["aps"].isObject() ||
        !(*body)["aps"]["account-id"].isString()) {
        return "<not a push body: " + push.body + ">";
    }
    return (*body)["aps"]["account-id"].asString();
}

// The marker (see E2eTest::settle()): a user of its own with one device.
inline constexpr const char *marker_user = "marker";
inline constexpr const char *marker_account_id = "6D61726B-6572-4000-8000-00000000E2E0";
inline const std::string marker_device_token = device_token(0xe2e0e2e0);

inline bool is_marker_push(const MockApnsRequest &push) {
    return push.device_token == marker_device_token;
}

inline std::vector<std::string> pushed_tokens(const std::vector<MockApnsRequest> &pushes) {
    std::vector<std::string> tokens;
    for (const auto &push : pushes) {
        tokens.push_back(push.device_token);
    }
    std::sort(tokens.begin(), tokens.end());
    return tokens;
}

inline const Registration *find_registration(const std::vector<Registration> &registrations,
                                             const std::string &token) {
    auto it = std::find_if(registrations.begin(), registrations.end(),
                           [&](const Registration &r) { return r.device_token == token; });
    return it == registrations.end() ? nullptr : &*it;
}

// No push waiting for xaps_delay and none unanswered, by the STATUS of the
// worker at admin_socket_path (whose rows land in `status` for a failure
// message).
inline bool worker_idle(const std::string &admin_socket_path, std::string &status) {
    std::map<std::string, std::string> rows;
    status.clear();
    for (const WireReply &reply : WorkerClient(admin_socket_path).request({"STATUS"})) {
        status += reply.line;
        if (reply.is_row() && reply.fields.size() == 2) {
            rows[reply.fields[0]] = reply.fields[1];
        }
    }
    auto number = [&](const char *key) {
        return rows.contains(key) ? std::stoull(rows[key]) : ~0ULL;
    };
    return number("pending") == 0 &&
           number("pushes_sent") == number("pushes_delivered") + number("pushes_failed");
}

class E2eTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "end-to-end tests run Dovecot and create users: they need root";
        }
        apns_ = std::make_unique<MockApnsServer>(mock_apns_config());
        apns_->start();
    }

    void TearDown() override {
        if (apns_) {
            expect_no_refusals(*apns_, expected_refusals_);
        }
        if (!dovecot_) {
            return;
        }
        // Stopping first lets a crash during shutdown show up in the log too.
        dovecot_->stop();
        expect_clean_log();
    }

    // No Panic or Fatal, and no process of Dovecot's died of a signal (the
    // master's "child N killed with signal" line), except what the test caused.
    void expect_clean_log() {
        std::vector<std::string> problems;
        ShutdownRaceFilter shutdown_race;
        std::istringstream lines(dovecot_->log());
        for (std::string line; std::getline(lines, line);) {
            if (shutdown_race.ignore(line)) {
                continue;
            }
            bool caused = std::any_of(
                expected_log_lines_.begin(), expected_log_lines_.end(),
                [&](const std::string &part) { return line.find(part) != std::string::npos; });
            bool problem = line.find("Panic: ") != std::string::npos ||
                           line.find("Fatal: ") != std::string::npos ||
                           line.find("killed with signal") != std::string::npos;
            if (problem && !caused) {
                problems.push_back(line);
            }
        }
        EXPECT_EQ(joined(problems), "") << "Dovecot's log:\n" << dovecot_->log();
    }

    DovecotOptions options() const { return dovecot_options(apns_->port()); }

    // Every instance has the marker user, so that any test can settle().
    void start_dovecot(DovecotOptions options) {
        if (std::find(options.extra_users.begin(), options.extra_users.end(), marker_user) ==
            options.extra_users.end()) {
            options.extra_users.emplace_back(marker_user);
        }
        dovecot_ = std::make_unique<DovecotInstance>(std::move(options));
        dovecot_->start();
    }

    std::unique_ptr<ImapClient> login(const std::string &user = "alice") {
        auto imap = std::make_unique<ImapClient>(dovecot_->imap_port());
        ImapResponse reply = imap->login(user, DovecotInstance::password);
        EXPECT_TRUE(reply.ok()) << reply.tagged;
        return imap;
    }

    // Registers over IMAP; fails the test unless the server answered OK.
    ImapResponse register_phone(ImapClient &imap, const PhoneRegistration &phone) {
        ImapResponse reply = imap.command(xapplepushservice_command(phone));
        EXPECT_TRUE(reply.ok()) << joined(reply.lines());
        return reply;
    }

    std::vector<Registration> registrations(const std::string &user = "alice") {
        return WorkerClient(dovecot_->admin_socket_path()).list(user);
    }

    SmtpReply deliver_to(const std::string &rcpt, const std::string &subject = "Hello") {
        LmtpClient lmtp(dovecot_->lmtp_port());
        return lmtp.deliver("sender@example.net", rcpt,
                            make_test_message("sender@example.net", rcpt, subject,
                                              "A mail that should wake up the phone.\n"));
    }

    // The pushes the mock accepted, without the marker's.
    std::vector<MockApnsRequest> pushes() const {
        std::vector<MockApnsRequest> all = apns_->requests();
        std::erase_if(all, is_marker_push);
        return all;
    }

    // Waits until the mock accepted `count` pushes besides the marker's.
    bool wait_for_pushes(std::size_t count, std::chrono::milliseconds timeout = push_timeout) {
        return eventually([&] { return pushes().size() >= count; }, timeout);
    }

    // Proves that every push caused by what the test did so far has reached
    // the mock, so that "no (further) push" can be asserted right after.
    // Instead of waiting for a quiet period, it sends mail to the marker
    // user's device through the very path a push takes and waits for that
    // push, then for the worker to have nothing left to do:
    //  * The plugin writes NOTIFY to the worker socket while the mail
    //    transaction commits, before LMTP answers 250 and before IMAP answers
    //    the command (the connection is not corked there, so the line goes to
    //    the kernel at once). So whatever the test did is on a worker socket
    //    before the marker mail is even sent.
    //  * One worker process (process_limit = 1) reads its connections in one
    //    event loop, in the order they became readable, and each connection's
    //    lines in order. So the marker's NOTIFY is handled after the test's.
    //  * The scheduler hands a new-mail push to the APNs client within
    //    notify(); the client queues in order and, with one HTTP/2
    //    connection (xaps_apns_connections default), opens streams in order.
    //    So a wrong new-mail push reaches the mock before the marker's.
    //  * What notify() does not send at once is still the worker's work: a
    //    delayed push (xaps_delay) or a follow-up for a device whose push is
    //    in flight. Waiting until STATUS shows nothing pending and every push
    //    answered (pushes_sent = delivered + failed) covers those: a push that
    //    was answered had reached the mock. A test whose xaps_delay outlasts
    //    push_timeout cannot settle while such a push waits, and fails here.
    void settle() {
        std::unique_ptr<ImapClient> imap = login(marker_user);
        PhoneRegistration marker;
        marker.account_id = marker_account_id;
        marker.device_token = marker_device_token;
        // Again every time: a test may have purged or expired it meanwhile.
        register_phone(*imap, marker);
        auto marker_pushes = [this] {
            std::vector<MockApnsRequest> all = apns_->requests();
            return std::count_if(all.begin(), all.end(), is_marker_push);
        };
        const auto markers_before = marker_pushes();
        SmtpReply delivery = deliver_to(std::string(marker_user) + "@example.com", "Marker");
        ASSERT_EQ(delivery.code, 250) << delivery.text();
        const auto deadline = std::chrono::steady_clock::now() + push_timeout;
        while (marker_pushes() == markers_before) {
            ASSERT_LT(std::chrono::steady_clock::now(), deadline)
                << "the marker's push did not arrive\nDovecot's log:\n"
                << dovecot_->log();
            std::this_thread::sleep_for(10ms);
        }
        std::string status;
        while (!worker_idle(dovecot_->admin_socket_path(), status)) {
            ASSERT_LT(std::chrono::steady_clock::now(), deadline)
                << "the worker still has pushes to send:\n"
                << status;
            std::this_thread::sleep_for(20ms);
        }
    }

    // Waits for `count` pushes, then settles, and returns all pushes but the marker's.
    std::vector<MockApnsRequest> pushes_settled(std::size_t count) {
        if (count > 0) {
            EXPECT_TRUE(wait_for_pushes(count)) << "expected " << count << " pushes, got "
                                                << pushes().size() << "\nDovecot's log:\n"
                                                << dovecot_->log();
        }
        settle();
        return pushes();
    }

    std::unique_ptr<MockApnsServer> apns_;
    std::unique_ptr<DovecotInstance> dovecot_;
    // Parts of log lines a test caused on purpose (a process it killed).
    std::vector<std::string> expected_log_lines_;
    // The reasons of the APNs refusals a test provoked on purpose; any other
    // refusal means the product sent what Apple would refuse.
    std::vector<std::string> expected_refusals_;
};

} // namespace xaps::test::e2e
