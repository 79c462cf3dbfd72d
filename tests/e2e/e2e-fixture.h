// What the end-to-end suites about registration and notification share: a
// GoogleTest fixture that owns the mock APNs server and one Dovecot, and the
// steps a phone, an MTA and an admin take against them.
#pragma once

#include "e2e-environment.h"
#include "e2e-refusals.h"
#include "imap-client.h"
#include "lmtp-client.h"
#include "worker-client.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace xaps::test::e2e {

using namespace std::chrono_literals;

// A push that was expected arrives in milliseconds; this only bounds a failure.
inline constexpr auto push_timeout = 10s;
// Long enough for a second, unwanted push to show up.
inline constexpr auto quiet_period = 500ms;

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

    void start_dovecot(DovecotOptions options) {
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

    // Waits for `count` pushes, then for a quiet period, and returns them all.
    std::vector<MockApnsRequest> pushes_settled(std::size_t count) {
        if (count > 0) {
            EXPECT_TRUE(apns_->wait_for_requests(count, push_timeout))
                << "expected " << count << " pushes, got " << apns_->requests_received()
                << "\nDovecot's log:\n"
                << dovecot_->log();
        }
        std::this_thread::sleep_for(quiet_period);
        return apns_->requests();
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
