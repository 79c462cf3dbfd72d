// End to end: which mailbox changes push, when, and how often. A real Dovecot
// with the xaps plugin and worker; mail arrives by LMTP, dovecot-lda and IMAP
// APPEND, and the mock APNs server records what reaches "Apple".
#include "e2e-fixture.h"
#include "xaps-error.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <map>
#include <spawn.h>
#include <sys/wait.h>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using Clock = std::chrono::steady_clock;
using xaps::Registration;

// xaps_delay in these tests: long enough that a loaded machine still makes
// several IMAP commands within one delay.
constexpr auto delay = 5s;
constexpr const char *delay_setting = "5s";
// An xaps_delay no test outlives: a push that arrives at all did not wait for
// it, whatever the machine's speed.
constexpr const char *endless_delay_setting = "10min";

std::string message_for(const std::string &subject) {
    return make_test_message("sender@example.net", "alice@example.com", subject,
                             "Something changed.\n");
}

// APPEND with a non-synchronizing literal (LITERAL+, which Dovecot offers).
ImapResponse append(ImapClient &imap, const std::string &tag, const std::string &mailbox,
                    const std::string &message) {
    imap.send_raw(tag + " APPEND " + imap_quote(mailbox) + " {" + std::to_string(message.size()) +
                  "+}\r\n" + message + "\r\n");
    return imap.read_response(tag);
}

std::chrono::milliseconds since(Clock::time_point start, Clock::time_point end) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(end - start);
}

// Runs dovecot-lda as an MTA would, the message on its standard input, and
// returns its exit status (-1 when it did not exit normally).
int run_dovecot_lda(const std::string &conf, const std::string &user,
                    const std::string &message_file) {
    // As the documented setup has the MTA run it: as the mail user, with
    // group dovecot so that the worker's mail listener admits it.
    const char *argv[] = {"/usr/bin/setpriv",
                          "--reuid=vmail",
                          "--regid=vmail",
                          "--groups=dovecot",
                          "/usr/lib/dovecot/dovecot-lda",
                          "-c",
                          conf.c_str(),
                          "-d",
                          user.c_str(),
                          nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, message_file.c_str(), O_RDONLY, 0);
    pid_t pid = -1;
    int error =
        ::posix_spawn(&pid, argv[0], &actions, nullptr, const_cast<char *const *>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
        throw xaps::Error(xaps::ErrorKind::internal,
                          std::string("posix_spawn dovecot-lda: ") + std::strerror(error));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class E2eNotifications : public E2eTest {
protected:
    DovecotOptions options_with_delay() const {
        DovecotOptions with_delay = options();
        with_delay.plugin_settings["xaps_delay"] = delay_setting;
        return with_delay;
    }

    DovecotOptions options_with_endless_delay() const {
        DovecotOptions with_delay = options();
        with_delay.plugin_settings["xaps_delay"] = endless_delay_setting;
        return with_delay;
    }

    // A session with the iPhone registered for `mailboxes` (which are created
    // first, unless INBOX) and INBOX selected; no push has happened yet.
    std::unique_ptr<ImapClient> phone_session(const std::vector<std::string> &mailboxes) {
        std::unique_ptr<ImapClient> imap = login();
        for (const auto &mailbox : mailboxes) {
            if (mailbox != "INBOX") {
                EXPECT_TRUE(imap->command("CREATE " + imap_quote(mailbox)).ok()) << mailbox;
            }
        }
        PhoneRegistration phone;
        phone.mailboxes = mailboxes;
        register_phone(*imap, phone);
        EXPECT_TRUE(imap->command("SELECT INBOX").ok());
        return imap;
    }
};

// The hierarchy separator of the personal namespace, from LIST "" "".
std::string hierarchy_separator(ImapClient &imap) {
    ImapResponse reply = imap.command(R"(LIST "" "")");
    for (const auto &line : reply.untagged) {
        // * LIST (\Noselect) "." ""
        auto open = line.find(") \"");
        if (line.starts_with("* LIST ") && open != std::string::npos && line.size() > open + 3) {
            return line.substr(open + 3, 1);
        }
    }
    ADD_FAILURE() << "no separator in " << joined(reply.lines());
    return ".";
}

// APPEND (what iOS does with a sent message), COPY and MOVE are new mail for
// the target mailbox: they push at once where the phone registered, and not
// at all elsewhere. Mailbox names are matched in UTF-8, as the phone's
// modified UTF-7 was converted at registration. With an endless xaps_delay, a
// push that arrives was sent at once, and settling proves that none waits.
TEST_F(E2eNotifications, NewMessagesPushAtOnceOnlyInRegisteredMailboxes) {
    start_dovecot(options_with_endless_delay());
    std::unique_ptr<ImapClient> imap = login();
    const std::string child = "Projects" + hierarchy_separator(*imap) + "Xaps";
    for (const std::string mailbox :
         {"Sent Messages", "Entw&APw-rfe", "Projects", child.c_str(), "Notes", "Notes 2"}) {
        ASSERT_TRUE(imap->command("CREATE " + imap_quote(mailbox)).ok()) << mailbox;
    }
    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", "Sent Messages", "Entw&APw-rfe", child};
    register_phone(*imap, phone);
    ASSERT_TRUE(imap->command("SELECT Notes").ok());

    unsigned appends = 0;
    auto append_to = [&](const std::string &mailbox) {
        return [&, mailbox](ImapClient &session) {
            ImapResponse reply = append(session, "ap" + std::to_string(++appends), mailbox,
                                        message_for("Append to " + mailbox));
            EXPECT_TRUE(reply.ok()) << reply.tagged;
        };
    };
    auto run = [](const std::string &command) {
        return [command](ImapClient &session) {
            ImapResponse reply = session.command(command);
            EXPECT_TRUE(reply.ok()) << command << ": " << reply.tagged;
        };
    };
    struct Row {
        std::string name;
        std::function<void(ImapClient &)> act;
        std::size_t pushes;
    };
    const std::vector<Row> rows = {
        {"APPEND to an unregistered mailbox", append_to("Notes"), 0},
        {"APPEND to Sent Messages", append_to("Sent Messages"), 1},
        {"APPEND to a modified UTF-7 name", append_to("Entw&APw-rfe"), 1},
        {"APPEND to a child mailbox", append_to(child), 1},
        {"APPEND to INBOX", append_to("INBOX"), 1},
        {"COPY between unregistered mailboxes", run("COPY 1 \"Notes 2\""), 0},
        {"COPY into a registered mailbox", run("COPY 1 \"Sent Messages\""), 1},
        {"MOVE into a registered mailbox", run("MOVE 1 \"Entw&APw-rfe\""), 1},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        apns_->clear_requests();
        row.act(*imap);
        std::vector<MockApnsRequest> pushes = pushes_settled(row.pushes);
        ASSERT_EQ(pushes.size(), row.pushes) << dovecot_->log();
        for (const auto &push : pushes) {
            EXPECT_EQ(push.device_token, iphone_device_token);
        }
    }
}

// One LMTP transaction for several users: each user's phone is pushed (the
// driver runs per user, the worker connection is shared by the process).
TEST_F(E2eNotifications, OneLmtpTransactionPushesEveryRecipient) {
    DovecotOptions settings = options_with_delay();
    settings.extra_users = {"carol"};
    start_dovecot(std::move(settings));
    const std::vector<std::string> users = {"alice", "bob", "carol"};
    std::vector<std::string> tokens;
    for (std::size_t i = 0; i < users.size(); i++) {
        PhoneRegistration phone;
        phone.device_token = device_token(static_cast<unsigned>(i));
        register_phone(*login(users[i]), phone);
        tokens.push_back(phone.device_token);
    }
    std::sort(tokens.begin(), tokens.end());

    LmtpClient lmtp(dovecot_->lmtp_port());
    std::vector<SmtpReply> replies = lmtp.deliver_to_each(
        "sender@example.net", {"alice@example.com", "bob@example.com", "carol@example.com"},
        message_for("For all of you"));
    for (const auto &reply : replies) {
        EXPECT_EQ(reply.code, 250) << reply.text();
    }
    EXPECT_EQ(pushed_tokens(pushes_settled(users.size())), tokens);
}

// LMTP with lmtp_save_to_detail_mailbox delivers alice+Folder into Folder:
// that is new mail in Folder, not in INBOX.
TEST_F(E2eNotifications, LmtpDeliveryIntoDetailMailboxPushes) {
    DovecotOptions settings = options_with_delay();
    settings.extra_config = "recipient_delimiter = +\nlmtp_save_to_detail_mailbox = yes\n";
    start_dovecot(std::move(settings));
    std::unique_ptr<ImapClient> imap = phone_session({"Folder"});
    ASSERT_TRUE(imap->command("CREATE Other").ok());

    struct Row {
        const char *rcpt;
        const char *mailbox; // where the mail must land
        std::size_t pushes;
    };
    const std::vector<Row> rows = {
        {"alice@example.com", "INBOX", 0},
        {"alice+Other@example.com", "Other", 0},
        {"alice+Folder@example.com", "Folder", 1},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.rcpt);
        apns_->clear_requests();
        SmtpReply delivery = deliver_to(row.rcpt);
        ASSERT_EQ(delivery.code, 250) << delivery.text();
        std::vector<MockApnsRequest> pushes = pushes_settled(row.pushes);
        EXPECT_EQ(pushes.size(), row.pushes) << dovecot_->log();

        // Asked in another session: the phone's has INBOX selected, and
        // STATUS there tells that session's view.
        ImapResponse status = login()->command("STATUS " + imap_quote(row.mailbox) + " (MESSAGES)");
        ASSERT_TRUE(status.ok()) << status.tagged;
        EXPECT_EQ(joined(status.untagged),
                  "* STATUS " + std::string(row.mailbox) + " (MESSAGES 1)\n");
    }
}

// Flag changes and expunges are not new mail: they push after xaps_delay,
// every change within the delay folded into that one push.
TEST_F(E2eNotifications, FlagChangesAndExpungePushAfterTheDelayCoalesced) {
    start_dovecot(options_with_delay());
    std::unique_ptr<ImapClient> imap = phone_session({"INBOX"});

    struct Row {
        const char *name;
        std::vector<std::string> commands;
        std::size_t pushes;
    };
    const std::vector<Row> rows = {
        {"one flag set", {"STORE 1 +FLAGS (\\Seen)"}, 1},
        {"several flag changes within the delay",
         {"STORE 1 +FLAGS (\\Flagged)", "STORE 1 -FLAGS (\\Seen)", "STORE 1 +FLAGS (\\Seen)",
          "STORE 1 -FLAGS (\\Flagged)", "STORE 1 +FLAGS (\\Answered)"},
         1},
        {"a flag that is already set changes nothing", {"STORE 1 +FLAGS (\\Seen)"}, 0},
        {"expunge", {"STORE 1 +FLAGS (\\Deleted)", "EXPUNGE"}, 1},
    };
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    ASSERT_EQ(pushes_settled(1).size(), 1u) << "the mail to change";
    ASSERT_TRUE(imap->command("NOOP").ok()); // the session sees it

    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        apns_->clear_requests();
        const auto changed = Clock::now();
        for (const auto &command : row.commands) {
            ImapResponse reply = imap->command(command);
            ASSERT_TRUE(reply.ok()) << command << ": " << reply.tagged;
        }
        ASSERT_LT(since(changed, Clock::now()), delay)
            << "precondition: every change came within one delay";
        // A push for a later change that was not coalesced waits in the
        // worker until it is sent: settling waits for it.
        std::vector<MockApnsRequest> pushes = pushes_settled(row.pushes);
        ASSERT_EQ(pushes.size(), row.pushes) << dovecot_->log();
        for (const auto &push : pushes) {
            EXPECT_GE(since(changed, push.received), delay - 200ms) << "not before the delay";
        }
    }
}

// New mail while a delayed push waits: one push at once, which takes the
// delayed one's place (no second push when the delay would have ended). The
// delay is endless: the push that comes did not wait for it, and settling
// proves that no delayed push is left waiting.
TEST_F(E2eNotifications, NewMailAbsorbsAPendingDelayedPush) {
    start_dovecot(options_with_endless_delay());
    std::unique_ptr<ImapClient> imap = phone_session({"INBOX"});
    ASSERT_EQ(deliver_to("alice@example.com", "first").code, 250);
    ASSERT_EQ(pushes_settled(1).size(), 1u);
    ASSERT_TRUE(imap->command("NOOP").ok());
    apns_->clear_requests();

    ASSERT_TRUE(imap->command("STORE 1 +FLAGS (\\Seen)").ok());
    ASSERT_EQ(deliver_to("alice@example.com", "second").code, 250);
    EXPECT_EQ(pushes_settled(1).size(), 1u)
        << "new mail pushes at once, and the delayed push was absorbed";
}

// A device has at most one push in flight: while Apple takes its time, more
// mail folds into one follow-up push sent after the answer. The delay is
// endless: a follow-up that waited for it would never come.
TEST_F(E2eNotifications, AtMostOnePushInFlightPerDevice) {
    start_dovecot(options_with_endless_delay());
    std::unique_ptr<ImapClient> imap = phone_session({"INBOX"});
    // Long enough for five deliveries on a loaded machine.
    const auto apple_latency = 5s;
    apns_->set_responder([apple_latency](const MockApnsRequest &) {
        MockApnsResponse slow;
        slow.delay = apple_latency;
        return slow;
    });

    LmtpClient lmtp(dovecot_->lmtp_port());
    for (int i = 0; i < 5; i++) {
        SmtpReply reply = lmtp.deliver("sender@example.net", "alice@example.com",
                                       message_for("mail " + std::to_string(i)));
        ASSERT_EQ(reply.code, 250) << reply.text();
    }
    const auto delivered = Clock::now();
    ASSERT_TRUE(wait_for_pushes(1)) << dovecot_->log();
    ASSERT_LT(delivered, pushes()[0].received + apple_latency)
        << "precondition: every mail arrived while the first push was in flight";
    std::vector<MockApnsRequest> pushes = pushes_settled(2);
    ASSERT_EQ(pushes.size(), 2u) << "the first push, then one for everything that came meanwhile";
    EXPECT_GE(since(pushes[0].received, pushes[1].received), apple_latency - 100ms)
        << "the second push waited for the first one's answer";
}

// dovecot-lda (an MTA's local delivery agent) loads the same plugin and pushes,
// although it is a short-lived process that exits right after delivering.
// The delay is endless: the push that comes did not wait for it. The plugin
// is loaded in lda by the shipped configuration alone.
TEST_F(E2eNotifications, DovecotLdaDeliveryPushes) {
    start_dovecot(options_with_endless_delay());
    phone_session({"INBOX"});

    const std::string message_file = dovecot_->dir() + "/lda-message.eml";
    std::ofstream(message_file, std::ios::binary) << message_for("Delivered by dovecot-lda");
    ASSERT_EQ(run_dovecot_lda(dovecot_->conf_path(), "alice", message_file), 0) << dovecot_->log();
    std::vector<MockApnsRequest> pushes = pushes_settled(1);
    ASSERT_EQ(pushes.size(), 1u) << dovecot_->log();
    EXPECT_EQ(pushes[0].device_token, iphone_device_token);
}

// A registration not renewed within xaps_registration_ttl is gone: no push,
// not listed; registering again brings it back.
TEST_F(E2eNotifications, ExpiredRegistrationGetsNoPushUntilRenewed) {
    DovecotOptions settings = options_with_delay();
    settings.plugin_settings["xaps_registration_ttl"] = "2s";
    start_dovecot(std::move(settings));
    std::unique_ptr<ImapClient> imap = phone_session({"INBOX"});
    ASSERT_EQ(registrations().size(), 1u);

    std::this_thread::sleep_for(3200ms); // last_seen counts whole seconds
    EXPECT_EQ(registrations().size(), 0u) << "expired";
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_EQ(pushes_settled(0).size(), 0u);

    register_phone(*imap, PhoneRegistration{});
    EXPECT_EQ(registrations().size(), 1u);
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_EQ(pushes_settled(1).size(), 1u);
}

// xaps_max_devices_per_user caps a user's devices: a new one beyond the cap
// replaces the least recently seen (renewing counts as being seen).
TEST_F(E2eNotifications, DeviceCapDropsTheLeastRecentlySeen) {
    DovecotOptions settings = options_with_delay();
    settings.plugin_settings["xaps_max_devices_per_user"] = "2";
    start_dovecot(std::move(settings));
    std::unique_ptr<ImapClient> imap = login();

    PhoneRegistration first;
    first.device_token = device_token(1);
    PhoneRegistration second;
    second.device_token = device_token(2);
    PhoneRegistration third;
    third.device_token = device_token(3);
    // last_seen counts whole seconds: space the registrations apart.
    register_phone(*imap, first);
    std::this_thread::sleep_for(1100ms);
    register_phone(*imap, second);
    std::this_thread::sleep_for(1100ms);
    register_phone(*imap, first); // seen again: now the second is the oldest
    std::this_thread::sleep_for(1100ms);
    register_phone(*imap, third);

    std::vector<std::string> stored;
    for (const Registration &registration : registrations()) {
        stored.push_back(registration.device_token);
    }
    std::sort(stored.begin(), stored.end());
    EXPECT_EQ(stored, (std::vector<std::string>{first.device_token, third.device_token}));

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> pushes = pushes_settled(2);
    EXPECT_EQ(pushed_tokens(pushes),
              (std::vector<std::string>{first.device_token, third.device_token}));
}

// Apple's word that a token is dead removes its registration, unless the
// phone registered again after the time Apple gives; other devices stay.
TEST_F(E2eNotifications, DevicesAppleReportsGoneAreRemoved) {
    start_dovecot(options_with_delay());
    std::unique_ptr<ImapClient> imap = login();
    struct Row {
        const char *name;
        MockApnsResponse answer;
        bool kept;
    };
    const auto hour_ago_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch() - std::chrono::hours(1))
            .count();
    const std::vector<Row> rows = {
        {"200: delivered", {200, "", std::nullopt, 0ms}, true},
        {"410 Unregistered now", {410, "Unregistered", std::nullopt, 0ms}, false},
        {"400 BadDeviceToken", {400, "BadDeviceToken", std::nullopt, 0ms}, false},
        {"400 DeviceTokenNotForTopic", {400, "DeviceTokenNotForTopic", std::nullopt, 0ms}, false},
        {"410 Unregistered before the phone registered again",
         {410, "Unregistered", hour_ago_ms, 0ms},
         true},
        {"429 TooManyRequests is no verdict on the device",
         {429, "TooManyRequests", {}, 0ms},
         true},
    };
    std::map<std::string, MockApnsResponse> answers;
    std::vector<std::string> kept;
    for (std::size_t i = 0; i < rows.size(); i++) {
        PhoneRegistration phone;
        phone.device_token = device_token(static_cast<unsigned>(i));
        register_phone(*imap, phone);
        answers[phone.device_token] = rows[i].answer;
        if (rows[i].kept) {
            kept.push_back(phone.device_token);
        }
    }
    std::sort(kept.begin(), kept.end());
    apns_->set_responder([answers](const MockApnsRequest &request) {
        auto it = answers.find(request.device_token);
        return it == answers.end() ? MockApnsResponse{} : it->second;
    });

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    ASSERT_TRUE(wait_for_pushes(rows.size())) << dovecot_->log();
    std::vector<std::string> stored;
    const auto deadline = Clock::now() + push_timeout;
    do {
        std::this_thread::sleep_for(100ms);
        stored.clear();
        for (const Registration &registration : registrations()) {
            stored.push_back(registration.device_token);
        }
        std::sort(stored.begin(), stored.end());
    } while (stored != kept && Clock::now() < deadline);
    for (std::size_t i = 0; i < rows.size(); i++) {
        SCOPED_TRACE(rows[i].name);
        bool listed = std::binary_search(stored.begin(), stored.end(),
                                         device_token(static_cast<unsigned>(i)));
        EXPECT_EQ(listed, rows[i].kept);
    }
}

// Dovecot 2.3 runs push_notification_driver, ...driver2, ... and a later
// file that sets one of them replaces xaps without a word: the plugin says
// so, since every new-mail push is lost from then on.
TEST_F(E2eNotifications, APluginThatNoDriverSettingNamesIsReported) {
    if (installed_dovecot_version().at_least(2, 4)) {
        GTEST_SKIP() << "2.4's push_notification drivers are named filters that coexist";
    }
    DovecotOptions settings = options();
    settings.plugin_settings["push_notification_driver"] = ""; // taken away, as by a later file
    start_dovecot(settings);
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_TRUE(dovecot_->wait_for_log("no push_notification_driver setting names xaps", 60s))
        << dovecot_->log();
}

} // namespace
