#include "request-handler.h"

#include "poll-event-loop.h"
#include "push-scheduler.h"
#include "registration-store.h"
#include "tab-escape.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

namespace protocol = xaps::protocol;
using namespace std::chrono_literals;

namespace {

// The topic of docs/worker-protocol.md's examples.
constexpr const char *topic = "com.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c";
constexpr const char *token = "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";

class RecordingSender : public xaps::PushSender {
public:
    explicit RecordingSender(xaps::EventLoop &loop) : loop_(loop) {}
    void send(const xaps::Push &push, Done done) override {
        pushes.push_back(push);
        loop_.post([done] {
            xaps::PushOutcome outcome;
            outcome.result = xaps::PushOutcome::Result::delivered;
            outcome.http_status = 200;
            done(outcome);
        });
    }
    std::string unavailable_reason() const override { return problem; }
    std::vector<xaps::Push> pushes;
    std::string problem; // what unavailable_reason() says

private:
    xaps::EventLoop &loop_;
};

class RequestHandlerTest : public ::testing::Test {
protected:
    RequestHandlerTest() {
        char pattern[] = "/tmp/xaps-handler-XXXXXX";
        dir_ = mkdtemp(pattern);
        auto options = xaps::LmdbStoreOptions::from(xaps::default_xaps_settings());
        options.path = dir_;
        options.max_map_size = 64 << 20;
        store_ = xaps::open_lmdb_store(options);
        gate_.open(sender_, topic);
        scheduler_ = std::make_unique<xaps::PushScheduler>(
            loop_, *store_, gate_, xaps::PushSchedulerSettings::from(xaps::default_xaps_settings()),
            [this] { return now_; });
        group_commit_ =
            std::make_unique<xaps::GroupCommit>(loop_, *store_, [this] { return now_; });
        handler_ = std::make_unique<xaps::RequestHandler>(
            *store_, *group_commit_, *scheduler_, gate_,
            xaps::RequestHandlerSettings{{"com.apple.mobilemail"}},
            [] {
                return std::vector<std::pair<std::string, std::string>>{{"topic", topic}};
            },
            [this] { return now_; });
    }
    ~RequestHandlerTest() override { std::filesystem::remove_all(dir_); }

    // The listener each command is documented for (docs/worker-protocol.md).
    static protocol::PeerRole documented_listener(const protocol::Request &request) {
        return std::holds_alternative<protocol::Register>(request) ||
                       std::holds_alternative<protocol::Notify>(request) ||
                       std::holds_alternative<protocol::Hello>(request)
                   ? protocol::PeerRole::mail
                   : protocol::PeerRole::admin;
    }

    // Runs the loop until the final reply (REGISTER answers after its commit).
    std::vector<protocol::Reply> handle(const protocol::Request &request) {
        return handle_on(documented_listener(request), request);
    }
    std::vector<protocol::Reply> handle_on(protocol::PeerRole listener,
                                           const protocol::Request &request) {
        auto replies = std::make_shared<std::vector<protocol::Reply>>();
        handler_->handle(protocol::RequestLine{next_id_++, request}, listener,
                         [replies](protocol::Reply reply) { replies->push_back(reply); });
        loop_.run_until(
            [&] {
                return !replies->empty() && replies->back().status != protocol::ReplyStatus::row;
            },
            5s);
        return *replies;
    }

    // One line in, as worker-connection.cc serves it (an undecodable line
    // gets FAIL with the id it may still have); every reply line out.
    std::string serve(protocol::PeerRole listener, const std::string &line) {
        EXPECT_EQ(line.back(), '\n');
        const std::vector<std::string> fields =
            xaps::split_line(std::string_view(line).substr(0, line.size() - 1));
        auto replies = std::make_shared<std::string>();
        auto done = std::make_shared<bool>(false);
        const auto collect = [replies, done](protocol::Reply reply) {
            *replies += protocol::encode_reply(reply);
            *done = reply.status != protocol::ReplyStatus::row;
        };
        try {
            handler_->handle(protocol::decode_request(fields), listener, collect);
        } catch (const xaps::Error &error) {
            collect(protocol::Reply::fail(protocol::request_id_of(fields), error));
        }
        loop_.run_until([&] { return *done; }, 5s);
        return *replies;
    }

    // Users user1000, user1001, ... with one registration each, last seen at 900.
    void import_users(int count) {
        std::vector<xaps::Registration> batch;
        for (int i = 0; i < count; ++i) {
            batch.push_back(registration("user" + std::to_string(1000 + i)));
            batch.back().last_seen = 900;
        }
        for (const auto &result : store_->import_batch(batch)) {
            ASSERT_TRUE(result.added);
        }
    }

    static xaps::Registration registration(const std::string &user = "alice") {
        xaps::Registration reg;
        reg.user = user;
        reg.account_id = "ACCOUNT-1";
        reg.device_token = token;
        reg.subtopic = "com.apple.mobilemail";
        reg.aps_version = 2;
        reg.mailboxes = {"INBOX", "Sent Messages"};
        return reg;
    }

    std::string dir_;
    std::int64_t now_ = 1000;
    xaps::PollEventLoop loop_;
    RecordingSender sender_{loop_};
    xaps::PushGate gate_{loop_, "not opened yet"};
    std::unique_ptr<xaps::RegistrationStore> store_;
    std::unique_ptr<xaps::PushScheduler> scheduler_;
    std::unique_ptr<xaps::GroupCommit> group_commit_;
    std::unique_ptr<xaps::RequestHandler> handler_;
    std::uint64_t next_id_ = 1;
};

TEST_F(RequestHandlerTest, RegisterStoresAndAnswersTheTopic) {
    auto replies = handle(protocol::Register{registration()});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].status, protocol::ReplyStatus::ok);
    EXPECT_EQ(replies[0].fields, std::vector<std::string>{topic});
    auto stored = store_->find_user("ALICE", 1000);
    ASSERT_EQ(stored.size(), 1U);
    EXPECT_EQ(stored[0].mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));
    EXPECT_EQ(stored[0].registered_at, 1000);
}

TEST_F(RequestHandlerTest, VersionOneMeansInboxOnlyAndTokensAreLowerCased) {
    auto reg = registration();
    reg.aps_version = 1;
    reg.mailboxes = {"Archive"};
    reg.device_token = "AABBCC";
    ASSERT_EQ(handle(protocol::Register{reg})[0].status, protocol::ReplyStatus::ok);
    auto stored = store_->find_user("alice", 1000);
    ASSERT_EQ(stored.size(), 1U);
    EXPECT_EQ(stored[0].mailboxes, std::vector<std::string>{"INBOX"});
    EXPECT_EQ(stored[0].device_token, "aabbcc");
}

TEST_F(RequestHandlerTest, InvalidRegistrationsAreRefused) {
    struct Case {
        const char *name;
        std::function<void(xaps::Registration &)> spoil;
    };
    const Case cases[] = {
        {"empty user", [](auto &r) { r.user.clear(); }},
        {"empty account", [](auto &r) { r.account_id.clear(); }},
        {"long account", [](auto &r) { r.account_id.assign(300, 'a'); }},
        {"account with a control character", [](auto &r) { r.account_id = "a\nb"; }},
        {"account not UTF-8", [](auto &r) { r.account_id = "acc\xff"; }},
        {"account with a surrogate", [](auto &r) { r.account_id = "\xed\xa0\x80"; }},
        {"non-hex token", [](auto &r) { r.device_token = "zz"; }},
        {"odd token", [](auto &r) { r.device_token = "abc"; }},
        {"long token", [](auto &r) { r.device_token.assign(202, 'a'); }},
        {"other subtopic", [](auto &r) { r.subtopic = "com.example"; }},
        {"version 3", [](auto &r) { r.aps_version = 3; }},
        {"too many mailboxes", [](auto &r) { r.mailboxes.assign(1001, "x"); }},
        {"empty mailbox", [](auto &r) { r.mailboxes = {""}; }},
        // What Dovecot decodes from the modified UTF-7 names "&AAE-" and "&AJ8-".
        {"mailbox with a C0 control",
         [](auto &r) {
             r.mailboxes = {"INBOX", "a\x01b"};
         }},
        {"mailbox with a C1 control", [](auto &r) { r.mailboxes = {"\xc2\x9f"}; }},
        {"mailbox with a line break", [](auto &r) { r.mailboxes = {"x\ny"}; }},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.name);
        auto reg = registration();
        c.spoil(reg);
        auto replies = handle(protocol::Register{reg});
        ASSERT_EQ(replies.size(), 1U);
        EXPECT_EQ(replies[0].status, protocol::ReplyStatus::fail);
        EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::invalid_input);
    }
    EXPECT_EQ(store_->size(), 0U);
}

TEST_F(RequestHandlerTest, RegisterWithoutCredentialIsUnavailable) {
    gate_.close("certificate expired");
    auto replies = handle(protocol::Register{registration()});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::unavailable);
    EXPECT_EQ(store_->size(), 0U);
}

TEST_F(RequestHandlerTest, NotifyPushesToTheRegisteredDevice) {
    handle(protocol::Register{registration()});
    auto replies = handle(protocol::Notify{"Alice", "Sent Messages", {"MessageAppend"}});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].status, protocol::ReplyStatus::ok);
    ASSERT_EQ(sender_.pushes.size(), 1U);
    EXPECT_EQ(sender_.pushes[0].device_token, token);
    EXPECT_EQ(sender_.pushes[0].account_id, "ACCOUNT-1");
    // MD5 of "Sent Messages" (openssl md5), the mailbox the push is about.
    EXPECT_EQ(sender_.pushes[0].mailbox_hashes,
              std::vector<std::string>{"579DB7EB2F78B2CB1F7F367CFF50C7A7"});
}

// Stale rows (RegistrationStore::put): the same user's row for the token
// under another account id goes once it missed its 23 h re-registration.
TEST_F(RequestHandlerTest, RegisterRetiresTheOverdueAccountOfTheSameToken) {
    handle(protocol::Register{registration()});
    auto second_account = registration();
    second_account.account_id = "ACCOUNT-2";
    now_ += 600;
    handle(protocol::Register{second_account});
    EXPECT_EQ(store_->find_user("alice", now_).size(), 2U) << "both may be live";
    now_ += 82800;
    handle(protocol::Register{second_account});
    auto stored = store_->find_user("alice", now_);
    ASSERT_EQ(stored.size(), 1U);
    EXPECT_EQ(stored[0].account_id, "ACCOUNT-2");
}

TEST_F(RequestHandlerTest, ListPurgeAndImport) {
    handle(protocol::Register{registration("alice")});
    handle(protocol::Register{registration("bob")});

    auto rows = handle(protocol::List{"bob"});
    ASSERT_EQ(rows.size(), 2U);
    EXPECT_EQ(rows[0].status, protocol::ReplyStatus::row);
    EXPECT_EQ(protocol::registration_from_fields(rows[0].fields).user, "bob");
    EXPECT_EQ(rows[1].fields, std::vector<std::string>{"1"});
    EXPECT_EQ(handle(protocol::List{}).size(), 3U);

    EXPECT_EQ(handle(protocol::Purge{protocol::PurgeScope::user, "ALICE"})[0].fields,
              std::vector<std::string>{"1"});
    EXPECT_EQ(handle(protocol::Purge{protocol::PurgeScope::token, token})[0].fields,
              std::vector<std::string>{"1"});
    EXPECT_EQ(store_->size(), 0U);

    auto imported = registration("carol");
    imported.registered_at = 500;
    imported.last_seen = 600;
    EXPECT_EQ(handle(protocol::Import{imported})[0].fields, std::vector<std::string>{"imported"});
    EXPECT_EQ(handle(protocol::Import{imported})[0].fields, std::vector<std::string>{"exists"});
    EXPECT_EQ(store_->find_user("carol", 1000).at(0).registered_at, 500);
    EXPECT_EQ(handle(protocol::Purge{protocol::PurgeScope::all, ""})[0].fields,
              std::vector<std::string>{"1"});
}

TEST_F(RequestHandlerTest, ListLeavesOutExpiredRegistrations) {
    handle(protocol::Register{registration("alice")});
    now_ += 31 * 24 * 3600; // past the default 30-day TTL
    auto replies = handle(protocol::List{});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].fields, std::vector<std::string>{"0"});
    EXPECT_EQ(handle(protocol::List{"alice"}).size(), 1U);
}

TEST_F(RequestHandlerTest, StatusRowsThenOk) {
    auto replies = handle(protocol::Status{});
    ASSERT_EQ(replies.size(), 2U);
    EXPECT_EQ(replies[0].fields, (std::vector<std::string>{"topic", topic}));
    EXPECT_EQ(replies[1].status, protocol::ReplyStatus::ok);
}

TEST_F(RequestHandlerTest, TestReportsEachDevice) {
    handle(protocol::Register{registration()});
    std::vector<protocol::Reply> replies;
    handler_->handle(protocol::RequestLine{99, protocol::Test{"alice"}}, protocol::PeerRole::admin,
                     [&replies](protocol::Reply reply) { replies.push_back(reply); });
    EXPECT_TRUE(replies.empty()) << "TEST answers from the event loop, after Apple";
    ASSERT_TRUE(loop_.run_until([&] { return replies.size() == 2; }, 5s));
    EXPECT_EQ(replies[0].fields, (std::vector<std::string>{"ACCOUNT-1", token, "200", ""}));
    EXPECT_EQ(replies[1].fields, std::vector<std::string>{"1"});
}

TEST_F(RequestHandlerTest, TestAnswersAtOnceWhenApnsIsOutOfReach) {
    handle(protocol::Register{registration()});
    sender_.problem = "no working connection to APNs api.push.apple.com:443 (last error: "
                      "connection refused); retrying";
    std::vector<protocol::Reply> replies;
    handler_->handle(protocol::RequestLine{99, protocol::Test{"alice"}}, protocol::PeerRole::admin,
                     [&replies](protocol::Reply reply) { replies.push_back(reply); });
    ASSERT_EQ(replies.size(), 1U) << "answered before handle() returns";
    EXPECT_EQ(replies[0].status, protocol::ReplyStatus::fail);
    EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::unavailable);
    EXPECT_NE(std::string(replies[0].error().what()).find(sender_.problem), std::string::npos)
        << replies[0].error().what();
    EXPECT_TRUE(sender_.pushes.empty());

    sender_.problem.clear();
    EXPECT_EQ(handle(protocol::Test{"alice"}).back().fields, std::vector<std::string>{"1"});
}

} // namespace

// The socket's mode is the whole access policy only if each listener serves
// its own commands and nothing else.
TEST_F(RequestHandlerTest, AdminCommandsAreRefusedOnTheMailListener) {
    handle(protocol::Register{registration("alice")});
    auto forged = registration("mallory");
    forged.registered_at = 900;
    forged.last_seen = 900;
    const protocol::Request admin_requests[] = {
        protocol::List{},
        protocol::List{"alice"},
        protocol::Purge{protocol::PurgeScope::all, ""},
        protocol::Purge{protocol::PurgeScope::user, "alice"},
        protocol::Purge{protocol::PurgeScope::token, token},
        protocol::Status{},
        protocol::Test{"alice"},
        protocol::Import{forged},
    };
    for (const auto &request : admin_requests) {
        SCOPED_TRACE(request.index());
        auto replies = handle_on(protocol::PeerRole::mail, request);
        ASSERT_EQ(replies.size(), 1U) << "no ROW before the FAIL";
        EXPECT_EQ(replies[0].status, protocol::ReplyStatus::fail);
        EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::forbidden);
        EXPECT_NE(std::string(replies[0].error().what()).find("admin socket"), std::string::npos)
            << replies[0].error().what();
    }
    auto stored = store_->all();
    ASSERT_EQ(stored.size(), 1U);
    EXPECT_EQ(stored[0].user, "alice");
    EXPECT_TRUE(sender_.pushes.empty()) << "TEST pushed nothing";
}

TEST_F(RequestHandlerTest, MailCommandsAreRefusedOnTheAdminListener) {
    auto replies = handle_on(protocol::PeerRole::admin, protocol::Register{registration()});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::forbidden);
    EXPECT_EQ(store_->size(), 0U);

    handle(protocol::Register{registration()});
    replies =
        handle_on(protocol::PeerRole::admin, protocol::Notify{"alice", "INBOX", {"MessageNew"}});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::forbidden);
    EXPECT_TRUE(sender_.pushes.empty());
}

TEST_F(RequestHandlerTest, HelloIsAnsweredOkAndObserved) {
    std::vector<std::pair<std::string, unsigned>> heard;
    handler_->set_hello_observer([&heard](const protocol::Hello &hello) {
        heard.emplace_back(hello.service, hello.process_limit);
    });
    EXPECT_EQ(serve(protocol::PeerRole::mail, "7\tHELLO\timap\t5000\n"), "7\tOK\n");
    EXPECT_EQ(serve(protocol::PeerRole::mail, "8\tHELLO\tlmtp\t100\n"), "8\tOK\n");
    EXPECT_EQ(heard,
              (std::vector<std::pair<std::string, unsigned>>{{"imap", 5000}, {"lmtp", 100}}));

    // doveadm's admin connections have no business announcing mail processes.
    EXPECT_EQ(serve(protocol::PeerRole::admin, "9\tHELLO\timap\t9000\n"),
              "9\tFAIL\tforbidden\tHELLO comes from mail processes: it is served on the mail "
              "socket (xaps), not on the admin socket\n");
    EXPECT_EQ(heard.size(), 2U);
}

TEST_F(RequestHandlerTest, HelloWithoutAnObserverIsStillAnswered) {
    EXPECT_EQ(serve(protocol::PeerRole::mail, "1\tHELLO\tpop3\t1024\n"), "1\tOK\n");
}

// A last_seen in the future would never expire and would outrank the
// user's real phones under xaps_max_devices_per_user.
TEST_F(RequestHandlerTest, ImportRefusesTimesInTheFuture) {
    auto in_future = registration("carol");
    in_future.registered_at = 900;
    in_future.last_seen = 1000 + 3600;
    auto replies = handle(protocol::Import{in_future});
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].error().kind(), xaps::ErrorKind::invalid_input);

    in_future.last_seen = 900;
    in_future.registered_at = 1000 + 86400;
    EXPECT_EQ(handle(protocol::Import{in_future})[0].error().kind(),
              xaps::ErrorKind::invalid_input);
    EXPECT_EQ(store_->size(), 0U);

    // A clock a few seconds ahead on the exporting machine is no forgery.
    auto slightly_ahead = registration("carol");
    slightly_ahead.registered_at = 1000 + 60;
    slightly_ahead.last_seen = 1000 + 60;
    EXPECT_EQ(handle(protocol::Import{slightly_ahead})[0].fields,
              std::vector<std::string>{"imported"});
}

// The literal exchanges of docs/worker-protocol.md ("Examples"), copied from
// the document, through the handler that serves them.
TEST_F(RequestHandlerTest, TheDocumentedMailListenerExchange) {
    const auto mail = protocol::PeerRole::mail;
    now_ = 1700000000;
    EXPECT_EQ(serve(mail, "1\tREGISTER\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
                          "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\t"
                          "com.apple.mobilemail\t2\tINBOX\tSent Messages\n"),
              "1\tOK\tcom.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c\n");
    EXPECT_EQ(serve(mail, "2\tNOTIFY\talice\tSent Messages\tMessageNew\tFlagsSet\n"), "2\tOK\n");
    ASSERT_EQ(sender_.pushes.size(), 1U);
    EXPECT_EQ(sender_.pushes[0].device_token,
              "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a");
    EXPECT_EQ(serve(mail, "3\tNOTIFY\talice\tTab\001there\tMessageNew\n"), "3\tOK\n");
    EXPECT_EQ(serve(mail, "4\tNOTIFY\talice\tA\0011B\tMessageNew\n"), "4\tOK\n");
    EXPECT_EQ(serve(mail, "5\tLIST\n"),
              "5\tFAIL\tforbidden\tLIST is an admin command: it is served on the admin socket "
              "(xaps-admin, root only; doveadm xaps uses it), not on the mail socket\n");
    EXPECT_EQ(serve(mail, "6\tFROB\n"), "6\tFAIL\tinvalid\tunknown command 'FROB'\n");
    EXPECT_EQ(serve(mail, "x\tSTATUS\n"), "0\tFAIL\tinvalid\tinvalid request id 'x'\n");
}

TEST_F(RequestHandlerTest, TheDocumentedAdminListenerExchange) {
    now_ = 1700000000;
    ASSERT_EQ(serve(protocol::PeerRole::mail,
                    "1\tREGISTER\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
                    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\t"
                    "com.apple.mobilemail\t2\tINBOX\tSent Messages\n"),
              "1\tOK\tcom.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c\n");
    const auto admin = protocol::PeerRole::admin;
    EXPECT_EQ(serve(admin, "1\tLIST\talice\n"),
              "1\tROW\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
              "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\t"
              "com.apple.mobilemail\t2\t1700000000\t1700000000\tINBOX\tSent Messages\n"
              "1\tOK\t1\n");
    EXPECT_EQ(serve(admin, "2\tPURGE\tuser\talice\n"), "2\tOK\t1\n");
    EXPECT_EQ(serve(admin, "3\tLIST\n"), "3\tOK\t0\n");
}

TEST_F(RequestHandlerTest, MigrateWithoutASharedStoreIsTheDocumentedFail) {
    EXPECT_EQ(serve(protocol::PeerRole::admin, "5\tMIGRATE\tto-local\n"),
              "5\tFAIL\tconfig\txaps_shared_store is not set: there is no shared store to "
              "migrate to or from\n");
}

TEST_F(RequestHandlerTest, MigrateGoesToItsHandlerWithTheReply) {
    std::vector<std::pair<std::uint64_t, protocol::MigrationDirection>> heard;
    handler_->set_migrate_handler([&heard](std::uint64_t id, const protocol::Migrate &request,
                                           const xaps::RequestHandler::Reply &reply) {
        heard.emplace_back(id, request.direction);
        reply(protocol::Reply::row(id, {"1000", "0"}));
        reply(protocol::Reply::ok(id, {"1498", "2"}));
    });
    EXPECT_EQ(serve(protocol::PeerRole::admin, "4\tMIGRATE\tto-shared\n"),
              "4\tROW\t1000\t0\n4\tOK\t1498\t2\n");
    ASSERT_EQ(heard.size(), 1U);
    EXPECT_EQ(heard[0].first, 4U);
    EXPECT_EQ(heard[0].second, protocol::MigrationDirection::to_shared);
    EXPECT_EQ(serve(protocol::PeerRole::mail, "5\tMIGRATE\tto-shared\n"),
              "5\tFAIL\tforbidden\tMIGRATE is an admin command: it is served on the admin "
              "socket (xaps-admin, root only; doveadm xaps uses it), not on the mail socket\n");
    EXPECT_EQ(heard.size(), 1U);
}

namespace {

// A peer that takes rows only when the test lets it: has_room() is true for
// `pages_allowed` more checks, and when_room() keeps the LIST's resume.
struct ControlledPeer {
    xaps::ReplyFlow flow() {
        xaps::ReplyFlow flow;
        flow.has_room = [this] {
            if (pages_allowed == 0) {
                return false;
            }
            --pages_allowed;
            return true;
        };
        flow.when_room = [this](std::function<void()> resume) {
            ++waits;
            waiting = std::move(resume);
        };
        return flow;
    }
    // Lets one more page through and continues the LIST.
    void drain_one_page() {
        ASSERT_TRUE(waiting);
        pages_allowed = 1;
        std::function<void()> resume = std::move(waiting);
        waiting = nullptr;
        resume();
    }

    std::size_t pages_allowed = 0;
    std::size_t waits = 0;
    std::function<void()> waiting;
    std::vector<protocol::Reply> replies;
};

} // namespace

TEST_F(RequestHandlerTest, ListWritesNoRowWhileThePeerIsFullAndAPagePerDrain) {
    // 600 registrations: pages of 256, 256 and 88 (list_page_rows = 256).
    import_users(600);
    ControlledPeer peer;
    handler_->handle(
        protocol::RequestLine{7, protocol::List{}}, protocol::PeerRole::admin,
        [&peer](protocol::Reply reply) { peer.replies.push_back(reply); }, peer.flow());
    EXPECT_TRUE(peer.replies.empty()) << "rows written to a full peer";
    EXPECT_EQ(peer.waits, 1U);

    peer.drain_one_page();
    EXPECT_EQ(peer.replies.size(), 256U);
    EXPECT_EQ(peer.waits, 2U);
    peer.drain_one_page();
    EXPECT_EQ(peer.replies.size(), 512U);
    for (const auto &reply : peer.replies) {
        ASSERT_EQ(reply.status, protocol::ReplyStatus::row);
    }
    // A registration added behind the walk and one removed ahead of it.
    ASSERT_TRUE(store_->import([] {
        auto reg = registration("user0999");
        reg.last_seen = 900;
        return reg;
    }()));
    ASSERT_EQ(store_->remove_user("user1599"), 1U);
    peer.drain_one_page();
    ASSERT_EQ(peer.replies.size(), 512U + 87U + 1U);
    EXPECT_EQ(peer.waits, 3U);
    EXPECT_FALSE(peer.waiting) << "waits after its OK";
    const protocol::Reply &last = peer.replies.back();
    EXPECT_EQ(last.status, protocol::ReplyStatus::ok);
    EXPECT_EQ(last.id, 7U);
    EXPECT_EQ(last.fields, std::vector<std::string>{"599"});
    EXPECT_EQ(protocol::registration_from_fields(peer.replies[0].fields).user, "user1000");
    EXPECT_EQ(protocol::registration_from_fields(peer.replies[598].fields).user, "user1598");
}

TEST_F(RequestHandlerTest, AListWhosePeerLeftStopsAndLeavesNothingBehind) {
    import_users(300);
    ControlledPeer peer;
    peer.pages_allowed = 1;
    auto replies = std::make_shared<std::vector<protocol::Reply>>();
    std::weak_ptr<std::vector<protocol::Reply>> watch = replies;
    handler_->handle(
        protocol::RequestLine{8, protocol::List{}}, protocol::PeerRole::admin,
        [replies](protocol::Reply reply) { replies->push_back(reply); }, peer.flow());
    EXPECT_EQ(replies->size(), 256U);
    ASSERT_TRUE(peer.waiting);
    replies.reset();
    EXPECT_FALSE(watch.expired()) << "the waiting LIST holds its reply path";
    peer.waiting = nullptr; // what the connection does when the peer leaves
    EXPECT_TRUE(watch.expired());
}

TEST_F(RequestHandlerTest, ListWithoutFlowControlAnswersEveryPageAtOnce) {
    import_users(520);
    auto replies = handle(protocol::List{});
    ASSERT_EQ(replies.size(), 521U);
    EXPECT_EQ(replies.back().fields, std::vector<std::string>{"520"});
}

TEST_F(RequestHandlerTest, ImportsOfOneTurnShareOneCommitAndAnswerAfterIt) {
    ASSERT_TRUE(store_->import([] {
        auto reg = registration("dave");
        reg.last_seen = 900;
        return reg;
    }()));
    std::vector<std::string> answers;
    const auto record = [&answers](protocol::Reply reply) {
        answers.push_back(
            std::to_string(reply.id) + " " +
            (reply.status == protocol::ReplyStatus::ok
                 ? reply.fields.at(0)
                 : "FAIL " + std::string(xaps::error_kind_name(reply.error().kind()))));
    };
    const auto import_line = [](std::uint64_t id, const std::string &user, std::int64_t last_seen) {
        auto reg = registration(user);
        reg.registered_at = 800;
        reg.last_seen = last_seen;
        return protocol::RequestLine{id, protocol::Import{reg}};
    };
    const auto commits_before = group_commit_->counters().commits;
    handler_->handle(import_line(1, "alice", 900), protocol::PeerRole::admin, record);
    handler_->handle(import_line(2, "dave", 900), protocol::PeerRole::admin, record);
    handler_->handle(import_line(3, "erin", 1000 + 3600), protocol::PeerRole::admin, record);
    handler_->handle(import_line(4, "ALICE", 950), protocol::PeerRole::admin, record);
    handler_->handle(import_line(5, "bob", 900), protocol::PeerRole::admin, record);
    // The invalid one fails at once and alone; the others wait for the commit.
    EXPECT_EQ(answers, std::vector<std::string>{"3 FAIL invalid"});
    EXPECT_EQ(store_->size(), 1U);

    ASSERT_TRUE(loop_.run_until([&] { return answers.size() == 5; }, 5s));
    EXPECT_EQ(answers, (std::vector<std::string>{"3 FAIL invalid", "1 imported", "2 exists",
                                                 "4 exists", "5 imported"}));
    EXPECT_EQ(group_commit_->counters().commits - commits_before, 1U);
    EXPECT_EQ(group_commit_->counters().imports, 4U);
    EXPECT_EQ(store_->size(), 3U);
    EXPECT_EQ(store_->find_user("alice", 1000).at(0).last_seen, 900);
}

namespace {

// Holds each purge until the test answers it, as a shared store would.
class DeferredWrites final : public xaps::StoreWrites {
public:
    void write_batch(std::vector<xaps::Registration>, std::int64_t, std::vector<xaps::Registration>,
                     BatchDone) override {}
    void purge(xaps::PurgeScope scope, std::string value, CountDone done) override {
        purges.emplace_back(scope, value);
        pending.push_back(std::move(done));
    }
    void remove_gone_tokens(std::vector<xaps::RegistrationStore::GoneToken>, CountDone) override {}
    void expire(std::int64_t, CountDone) override {}

    std::vector<std::pair<xaps::PurgeScope, std::string>> purges;
    std::vector<CountDone> pending;
};

TEST(RequestHandlerWrites, PurgeIsAnsweredAfterItsWrite) {
    char pattern[] = "/tmp/xaps-handler-XXXXXX";
    const std::string dir = mkdtemp(pattern);
    {
        auto options = xaps::LmdbStoreOptions::from(xaps::default_xaps_settings());
        options.path = dir;
        auto store = xaps::open_lmdb_store(options);
        xaps::PollEventLoop loop;
        RecordingSender sender(loop);
        xaps::PushGate gate(loop, "not yet");
        DeferredWrites writes;
        xaps::PushScheduler scheduler(
            loop, *store, writes, gate,
            xaps::PushSchedulerSettings::from(xaps::default_xaps_settings()));
        xaps::GroupCommit group_commit(loop, writes, [] { return std::int64_t{1700000000}; });
        xaps::RequestHandler handler(*store, writes, group_commit, scheduler, gate,
                                     xaps::RequestHandlerSettings{{"com.apple.mobilemail"}},
                                     nullptr, [] { return std::int64_t{1700000000}; });
        std::vector<protocol::Reply> replies;
        handler.handle(
            protocol::RequestLine{7, protocol::Purge{protocol::PurgeScope::token, "AABB"}},
            protocol::PeerRole::admin,
            [&](protocol::Reply reply) { replies.push_back(std::move(reply)); });
        EXPECT_TRUE(replies.empty());
        ASSERT_EQ(writes.purges.size(), 1u);
        EXPECT_EQ(writes.purges[0].first, xaps::PurgeScope::token);
        EXPECT_EQ(writes.purges[0].second, "aabb"); // tokens are stored lower-case
        writes.pending[0](std::nullopt, 3);
        ASSERT_EQ(replies.size(), 1u);
        EXPECT_EQ(replies[0].status, protocol::ReplyStatus::ok);
        EXPECT_EQ(replies[0].fields, (std::vector<std::string>{"3"}));

        handler.handle(protocol::RequestLine{8, protocol::Purge{protocol::PurgeScope::all, ""}},
                       protocol::PeerRole::admin,
                       [&](protocol::Reply reply) { replies.push_back(std::move(reply)); });
        writes.pending[1](xaps::Error(xaps::ErrorKind::unavailable, "database down"), 0);
        ASSERT_EQ(replies.size(), 2u);
        EXPECT_EQ(replies[1].status, protocol::ReplyStatus::fail);
    }
    std::filesystem::remove_all(dir);
}

} // namespace
