// End to end: the mailboxes a push names in "m", against real Dovecot events.
// iOS Mail fetches the registered mailboxes whose MD5 (of the name as echoed
// to it, decoded from modified UTF-7, as UTF-8 bytes) a push lists, only the
// INBOX for a push without "m", and nothing for a push whose entries all fail
// to match: a wrong hash is worse than none. The expected digests are
// computed here with OpenSSL from the literal names, never by the product.
//
// "No push" is proven with a marker: a later event whose push must arrive
// after any wrong one would have (same session, so the worker sees the events
// in order, and a device has one push in flight at a time), never with a
// quiet period.
#include "e2e-fixture.h"
#include "ios-mailbox-hash.h"

#include <map>
#include <set>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using xaps::Registration;

// Names as a phone sends them (modified UTF-7) and as iOS hashes them (UTF-8).
constexpr const char *entwuerfe_mutf7 = "Entw&APw-rfe";
constexpr const char *entwuerfe_utf8 = "Entw\xC3\xBC"
                                       "rfe";
constexpr const char *sieve_folder = "Filed by Sieve";

// Generous: a busy two-core machine, sanitizers.
constexpr auto wait_for_push = 60s;

std::set<std::string> as_set(const std::vector<std::string> &hashes) {
    return {hashes.begin(), hashes.end()};
}

std::string describe(const std::vector<MockApnsRequest> &pushes) {
    std::string text;
    for (const auto &push : pushes) {
        text += push.device_token + " " + push.body + "\n";
    }
    return text;
}

// APPEND with a non-synchronizing literal (LITERAL+, which Dovecot offers).
ImapResponse append(ImapClient &imap, const std::string &tag, const std::string &mailbox,
                    const std::string &subject) {
    const std::string message =
        make_test_message("sender@example.net", "alice@example.com", subject, "Hello.\n");
    imap.send_raw(tag + " APPEND " + imap_quote(mailbox) + " {" + std::to_string(message.size()) +
                  "+}\r\n" + message + "\r\n");
    return imap.read_response(tag);
}

class E2eMailboxHashes : public E2eTest {
protected:
    // Waits until `count` pushes arrived and returns them, in arrival order.
    std::vector<MockApnsRequest> pushes(std::size_t count) {
        EXPECT_TRUE(apns_->wait_for_requests(count, wait_for_push))
            << "expected " << count << " pushes, got " << apns_->requests_received()
            << "\nDovecot's log:\n"
            << dovecot_->log();
        return apns_->requests();
    }

    // Logs in, creates `folders` and registers the iPhone for `mailboxes`.
    std::unique_ptr<ImapClient> phone_session(const std::vector<std::string> &folders,
                                              const PhoneRegistration &phone) {
        std::unique_ptr<ImapClient> imap = login();
        for (const auto &folder : folders) {
            EXPECT_TRUE(imap->command("CREATE " + imap_quote(folder)).ok()) << folder;
        }
        register_phone(*imap, phone);
        return imap;
    }
};

TEST_F(E2eMailboxHashes, SieveFiledMailIsPushedWithExactlyThatFoldersHash) {
    DovecotOptions settings = options();
    settings.sieve_script = "require \"fileinto\";\n"
                            "if header :contains \"subject\" \"[filed]\" {\n"
                            "  fileinto \"" +
                            std::string(sieve_folder) +
                            "\";\n"
                            "}\n";
    start_dovecot(std::move(settings));
    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", sieve_folder};
    auto imap = phone_session({sieve_folder}, phone);

    ASSERT_EQ(deliver_to("alice@example.com", "[filed] weekly report").code, 250);
    std::vector<MockApnsRequest> filed = pushes(1);
    ASSERT_EQ(filed.size(), 1u) << describe(filed);
    EXPECT_EQ(filed[0].account_id, iphone_account_id);
    ASSERT_TRUE(filed[0].mailbox_hashes) << filed[0].body;
    EXPECT_EQ(*filed[0].mailbox_hashes,
              std::vector<std::string>{xaps::test::ios_mailbox_hash(sieve_folder)})
        << filed[0].body;

    // The marker: a mail Sieve leaves in INBOX. Had the filed mail also
    // pushed INBOX, that push would be here before this one.
    ASSERT_EQ(deliver_to("alice@example.com", "just hello").code, 250);
    std::vector<MockApnsRequest> all = pushes(2);
    ASSERT_EQ(all.size(), 2u) << describe(all);
    ASSERT_TRUE(all[1].mailbox_hashes) << all[1].body;
    EXPECT_EQ(*all[1].mailbox_hashes,
              std::vector<std::string>{xaps::test::ios_mailbox_hash("INBOX")});

    // Sieve really filed it.
    ImapResponse status = imap->command("STATUS " + imap_quote(sieve_folder) + " (MESSAGES)");
    EXPECT_NE(joined(status.lines()).find("MESSAGES 1"), std::string::npos)
        << joined(status.lines());
}

TEST_F(E2eMailboxHashes, AppendToANonAsciiFolderIsHashedAsUtf8) {
    start_dovecot(options());
    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", entwuerfe_mutf7};
    auto imap = phone_session({entwuerfe_mutf7}, phone);

    ASSERT_TRUE(append(*imap, "a1", entwuerfe_mutf7, "draft").ok());
    std::vector<MockApnsRequest> all = pushes(1);
    ASSERT_EQ(all.size(), 1u) << describe(all);
    ASSERT_TRUE(all[0].mailbox_hashes) << all[0].body;
    EXPECT_EQ(*all[0].mailbox_hashes,
              std::vector<std::string>{xaps::test::ios_mailbox_hash(entwuerfe_utf8)})
        << "MD5 of the UTF-8 name, not of the modified UTF-7 one ("
        << xaps::test::ios_mailbox_hash(entwuerfe_mutf7) << ")";
    EXPECT_TRUE(all[0].mailbox_hashes_valid);
}

TEST_F(E2eMailboxHashes, InboxIsHashedAsEchoed) {
    start_dovecot(options());
    auto imap = phone_session({}, PhoneRegistration{});
    // A second phone that spelled it "inbox": the echo says "inbox", and so
    // does the hash iOS computes from it.
    PhoneRegistration lower_case;
    lower_case.device_token = device_token(2);
    lower_case.account_id = "1F9C4A0E-0000-4000-8000-00000000000B";
    lower_case.mailboxes = {"inbox"};
    ImapResponse echoed = register_phone(*imap, lower_case);
    EXPECT_NE(joined(echoed.lines()).find("* XAPPLEPUSHSERVICE \"mailbox\" \"inbox\""),
              std::string::npos)
        << joined(echoed.lines());

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> all = pushes(2);
    ASSERT_EQ(all.size(), 2u) << describe(all);
    std::map<std::string, std::vector<std::string>> by_token;
    for (const auto &push : all) {
        ASSERT_TRUE(push.mailbox_hashes) << push.body;
        by_token[push.device_token] = *push.mailbox_hashes;
    }
    EXPECT_EQ(by_token[iphone_device_token],
              std::vector<std::string>{xaps::test::ios_mailbox_hash("INBOX")});
    EXPECT_EQ(by_token[device_token(2)],
              std::vector<std::string>{xaps::test::ios_mailbox_hash("inbox")});
}

// Flag changes wait for xaps_delay (long here, so that the machine's speed
// cannot split the window) and coalesce; new mail pushes at once and takes
// the waiting push along: one push naming all three.
TEST_F(E2eMailboxHashes, FoldersChangedInOneWindowGiveOnePushWithTheirUnion) {
    DovecotOptions settings = options();
    settings.plugin_settings["xaps_delay"] = "10min";
    start_dovecot(std::move(settings));
    std::unique_ptr<ImapClient> imap = login();
    for (const char *folder : {"Sent Messages", "Archive"}) {
        ASSERT_TRUE(imap->command("CREATE " + imap_quote(folder)).ok()) << folder;
        ASSERT_TRUE(append(*imap, "setup", folder, "old").ok()) << folder;
    }
    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", "Sent Messages", "Archive"};
    register_phone(*imap, phone); // after the setup: its APPENDs pushed nobody

    for (const char *folder : {"Sent Messages", "Archive"}) {
        ASSERT_TRUE(imap->command("SELECT " + imap_quote(folder)).ok()) << folder;
        ASSERT_TRUE(imap->command("STORE 1 +FLAGS (\\Seen)").ok()) << folder;
    }
    ASSERT_TRUE(imap->command("UNSELECT").ok());
    ASSERT_TRUE(append(*imap, "a2", "INBOX", "new").ok());

    std::vector<MockApnsRequest> union_push = pushes(1);
    ASSERT_EQ(union_push.size(), 1u) << describe(union_push);
    ASSERT_TRUE(union_push[0].mailbox_hashes) << union_push[0].body;
    EXPECT_EQ(as_set(*union_push[0].mailbox_hashes),
              (std::set<std::string>{xaps::test::ios_mailbox_hash("Sent Messages"),
                                     xaps::test::ios_mailbox_hash("Archive"),
                                     xaps::test::ios_mailbox_hash("INBOX")}))
        << union_push[0].body;
    EXPECT_EQ(union_push[0].mailbox_hashes->size(), 3u) << "each mailbox once";

    // The marker: nothing of the window is left to push on its own.
    ASSERT_TRUE(append(*imap, "a3", "INBOX", "marker").ok());
    std::vector<MockApnsRequest> all = pushes(2);
    ASSERT_EQ(all.size(), 2u) << describe(all);
    ASSERT_TRUE(all[1].mailbox_hashes) << all[1].body;
    EXPECT_EQ(*all[1].mailbox_hashes,
              std::vector<std::string>{xaps::test::ios_mailbox_hash("INBOX")});
}

TEST_F(E2eMailboxHashes, AnUnregisteredFolderGivesNoPush) {
    start_dovecot(options());
    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", "Registered"};
    auto imap = phone_session({"Registered", "Unregistered"}, phone);

    ASSERT_TRUE(append(*imap, "a1", "Unregistered", "not for the phone").ok());
    ASSERT_TRUE(append(*imap, "a2", "Registered", "marker").ok());
    std::vector<MockApnsRequest> all = pushes(1);
    ASSERT_GE(all.size(), 1u);
    ASSERT_TRUE(all[0].mailbox_hashes) << all[0].body;
    EXPECT_EQ(*all[0].mailbox_hashes,
              std::vector<std::string>{xaps::test::ios_mailbox_hash("Registered")})
        << "the first push is the marker's: the unregistered folder pushed nothing";
    EXPECT_EQ(all.size(), 1u) << describe(all);
}

TEST_F(E2eMailboxHashes, AVersionOneRegistrationGetsNoM) {
    start_dovecot(options());
    PhoneRegistration old_phone;
    old_phone.aps_version = "1";
    old_phone.device_token = device_token(1);
    old_phone.mailboxes = {};
    auto imap = phone_session({}, old_phone);
    PhoneRegistration new_phone;
    new_phone.device_token = device_token(2);
    new_phone.account_id = "1F9C4A0E-0000-4000-8000-00000000000B";
    register_phone(*imap, new_phone);

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> all = pushes(2);
    ASSERT_EQ(all.size(), 2u) << describe(all);
    for (const auto &push : all) {
        SCOPED_TRACE(push.body);
        if (push.device_token == device_token(1)) {
            EXPECT_FALSE(push.mailbox_hashes) << "iOS ignores m for version 1";
            EXPECT_EQ(push.account_id, iphone_account_id);
        } else {
            ASSERT_TRUE(push.mailbox_hashes);
            EXPECT_EQ(*push.mailbox_hashes,
                      std::vector<std::string>{xaps::test::ios_mailbox_hash("INBOX")});
        }
    }
}

TEST_F(E2eMailboxHashes, WithHashesOffPushesAreInboxOnlyWithoutM) {
    DovecotOptions settings = options();
    settings.plugin_settings["xaps_push_mailbox_hashes"] = "no";
    start_dovecot(std::move(settings));
    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", "Sent Messages"};
    auto imap = phone_session({"Sent Messages"}, phone);

    ASSERT_TRUE(append(*imap, "a1", "Sent Messages", "sent").ok());
    ASSERT_TRUE(append(*imap, "a2", "INBOX", "marker").ok());
    std::vector<MockApnsRequest> all = pushes(1);
    ASSERT_EQ(all.size(), 1u) << describe(all);
    EXPECT_FALSE(all[0].mailbox_hashes) << all[0].body;
    EXPECT_EQ(all[0].account_id, iphone_account_id);
}

// Stale rows: a phone that re-added its account registers the token under a
// new account id; the old row goes once it missed its 23 h re-registration.
// Two live accounts of one phone that share the push user both stay.
TEST_F(E2eMailboxHashes, AReAddedAccountRetiresTheOverdueOldRowButTwoLiveAccountsStay) {
    DovecotOptions settings = options();
    // alice and bob log in separately and are one push user.
    settings.userdb_fields = "xaps_push_user=shared";
    settings.plugin_settings["xaps_user_lookup"] = "xaps_push_user";
    start_dovecot(std::move(settings));
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    auto import = [&](const std::string &account_id, std::int64_t last_seen) {
        Registration old;
        old.user = "shared";
        old.account_id = account_id;
        old.device_token = iphone_device_token;
        old.subtopic = "com.apple.mobilemail";
        old.mailboxes = {"INBOX"};
        old.registered_at = last_seen;
        old.last_seen = last_seen;
        auto replies = WorkerClient(dovecot_->admin_socket_path()).request(import_request(old));
        ASSERT_FALSE(replies.empty());
        EXPECT_TRUE(replies.back().ok()) << describe(replies);
    };
    import("REMOVED-ACCOUNT", now - 2 * 86400); // missed its re-registration
    import("BOBS-ACCOUNT", now - 3600);         // re-registered an hour ago

    register_phone(*login("alice"), PhoneRegistration{}); // alice's account, re-added
    std::set<std::string> accounts;
    for (const auto &registration : registrations("shared")) {
        accounts.insert(registration.account_id);
    }
    EXPECT_EQ(accounts, (std::set<std::string>{iphone_account_id, "BOBS-ACCOUNT"}));

    PhoneRegistration bobs;
    bobs.account_id = "BOBS-ACCOUNT";
    register_phone(*login("bob"), bobs);
    EXPECT_EQ(registrations("shared").size(), 2u) << "both accounts are live";

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> all = pushes(2);
    std::set<std::string> pushed;
    for (const auto &push : all) {
        pushed.insert(push.account_id);
    }
    EXPECT_EQ(pushed, (std::set<std::string>{iphone_account_id, "BOBS-ACCOUNT"})) << describe(all);
}

// `doveadm xaps test` relays the worker's TEST answer: with Apple out of
// reach it is an immediate refusal naming why, not a wait for the pushes'
// retries.
TEST_F(E2eMailboxHashes, TestAnswersAtOnceWhenApnsIsOutOfReach) {
    start_dovecot(options());
    register_phone(*login(), PhoneRegistration{});
    apns_->stop();

    const auto deadline = std::chrono::steady_clock::now() + wait_for_push;
    std::vector<WireReply> replies;
    for (;;) {
        // Until the worker has seen its reconnection fail.
        WorkerClient worker(dovecot_->admin_socket_path(), 120s);
        replies = worker.request({"TEST", "alice"});
        ASSERT_FALSE(replies.empty());
        if (replies.back().failed() || std::chrono::steady_clock::now() > deadline) {
            break;
        }
        std::this_thread::sleep_for(200ms);
    }
    ASSERT_EQ(replies.size(), 1u) << "no device rows: nothing was pushed";
    ASSERT_TRUE(replies[0].failed()) << describe(replies);
    EXPECT_EQ(replies[0].fields[0], "unavailable");
    EXPECT_NE(replies[0].fields[1].find("no working connection to APNs 127.0.0.1:" +
                                        std::to_string(apns_->port())),
              std::string::npos)
        << describe(replies);
}

} // namespace
