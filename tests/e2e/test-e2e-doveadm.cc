// End to end: `doveadm xaps ...` (the built doveadm plugin, run by the
// installed doveadm in a private mount namespace: e2e-doveadm-command.h)
// against a real Dovecot with the xaps worker and the mock APNs server.
// Without the privilege to make that namespace the tests skip.
#include "e2e-doveadm-command.h"
#include "e2e-environment.h"
#include "e2e-refusals.h"
#include "imap-client.h"
#include "lmtp-client.h"
#include "temporary-directory.h"
#include "worker-client.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sysexits.h>
#include <unistd.h>

#ifndef XAPS_DOVEADM_MODULE_PATH
#error "meson must define XAPS_DOVEADM_MODULE_PATH"
#endif

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;

constexpr auto push_timeout = 10s;

Json::Value parse_json(const std::string &text) {
    Json::CharReaderBuilder builder;
    std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value value;
    std::string errors;
    EXPECT_TRUE(reader->parse(text.data(), text.data() + text.size(), &value, &errors))
        << errors << " in '" << text << "'";
    return value;
}

std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) {
            end = text.size();
        }
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return lines;
}

std::int64_t unix_now() {
    return static_cast<std::int64_t>(std::time(nullptr));
}

// Unix seconds -> "2026-11-28T08:14:36Z".
std::string format_iso8601_utc(std::int64_t seconds) {
    std::time_t time = static_cast<std::time_t>(seconds);
    struct tm tm {};
    char text[32];
    ::gmtime_r(&time, &tm);
    std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

// "2026-11-28T08:14:36Z" -> unix seconds.
std::int64_t parse_iso8601_utc(const std::string &text) {
    struct tm tm {};
    const char *end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    EXPECT_TRUE(end != nullptr && *end == '\0') << text;
    return end == nullptr ? 0 : static_cast<std::int64_t>(::timegm(&tm));
}

const std::string second_token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const std::string third_token = "0a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223242526272829";

class E2eDoveadm : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "end-to-end tests run Dovecot and create users: they need root";
        }
        module_dir_ = e2e::directory_holding_doveadm_module(XAPS_DOVEADM_MODULE_PATH);
        CommandResult probe = e2e::run_in_namespace(module_dir_->path(), {"/bin/true"});
        if (probe.exit_code == e2e::no_mount_namespace_exit_code) {
            GTEST_SKIP() << "no private mount namespace for doveadm here: " << probe.err;
        }
        ASSERT_EQ(probe.exit_code, 0) << probe.err;
        apns_ = std::make_unique<MockApnsServer>(e2e::mock_apns_config());
        apns_->start();
    }

    void TearDown() override {
        if (apns_) {
            e2e::expect_no_refusals(*apns_);
        }
        if (!dovecot_) {
            return;
        }
        dovecot_->stop();
        std::string problems;
        for (const auto &line : dovecot_->log_problems()) {
            problems += line + "\n";
        }
        EXPECT_EQ(problems, "") << "Dovecot's log:\n" << dovecot_->log();
    }

    void start_dovecot(DovecotOptions options) {
        dovecot_ = std::make_unique<DovecotInstance>(std::move(options));
        dovecot_->start();
    }
    void start_dovecot() { start_dovecot(e2e::dovecot_options(apns_->port())); }

    // doveadm -c <the instance's conf> <args>
    CommandResult doveadm(std::vector<std::string> args, const std::string &input = "") {
        args.insert(args.begin(), {e2e::doveadm_binary, "-c", dovecot_->conf_path()});
        return e2e::run_in_namespace(module_dir_->path(), args, input);
    }

    // `-f json` output, parsed; the run must exit with `expected_exit`.
    Json::Value doveadm_json(std::vector<std::string> args, int expected_exit = 0) {
        args.insert(args.begin(), {"-f", "json"});
        CommandResult result = doveadm(args);
        EXPECT_EQ(result.exit_code, expected_exit) << result.err;
        return parse_json(result.out);
    }

    // Registers alice's iPhone over IMAP, as iOS Mail does.
    void register_iphone() {
        ImapClient imap(dovecot_->imap_port());
        ASSERT_TRUE(imap.login("alice", DovecotInstance::password).ok());
        ImapResponse reply = imap.command(e2e::xapplepushservice_command());
        ASSERT_TRUE(reply.ok()) << reply.tagged;
    }

    std::vector<xaps::Registration> stored(const std::string &user = {}) {
        return WorkerClient(dovecot_->admin_socket_path()).list(user);
    }

    std::string write_file(const std::string &name, const std::string &text) {
        std::string path = dovecot_->dir() + "/" + name;
        std::ofstream(path, std::ios::binary) << text;
        return path;
    }

    std::unique_ptr<TemporaryDirectory> module_dir_;
    std::unique_ptr<MockApnsServer> apns_;
    std::unique_ptr<DovecotInstance> dovecot_;
};

TEST_F(E2eDoveadm, ListShowsRegistrationsInEveryFormatter) {
    start_dovecot();
    const std::int64_t before = unix_now();
    register_iphone();

    Json::Value rows = doveadm_json({"xaps", "list"});
    ASSERT_TRUE(rows.isArray());
    ASSERT_EQ(rows.size(), 1u) << rows;
    const Json::Value &row = rows[0];
    EXPECT_EQ(row["user"], "alice");
    EXPECT_EQ(row["account_id"], e2e::iphone_account_id);
    EXPECT_EQ(row["device_token"], e2e::iphone_device_token);
    EXPECT_EQ(row["subtopic"], "com.apple.mobilemail");
    EXPECT_EQ(row["mailboxes"], R"(("INBOX" "Sent Messages"))");
    EXPECT_EQ(row["aps_version"], 2) << "a number, not a string";
    const std::int64_t registered = parse_iso8601_utc(row["registered"].asString());
    EXPECT_GE(registered, before - 1);
    EXPECT_LE(registered, unix_now() + 1);
    EXPECT_EQ(row["last_seen"], row["registered"]);

    // User names are compared case-insensitively; other users see nothing.
    EXPECT_EQ(doveadm_json({"xaps", "list", "-u", "ALICE"}).size(), 1u);
    Json::Value none = doveadm_json({"xaps", "list", "-u", "bob"});
    EXPECT_TRUE(none.isArray() && none.empty()) << none;

    const std::string fields = "user\taccount_id\tdevice_token\tsubtopic\tmailboxes\taps_version\t"
                               "registered\tlast_seen";
    CommandResult tab = doveadm({"-f", "tab", "xaps", "list"});
    EXPECT_EQ(tab.exit_code, 0) << tab.err;
    const std::vector<std::string> expected_tab = {
        fields, std::string("alice\t") + e2e::iphone_account_id + "\t" + e2e::iphone_device_token +
                    "\tcom.apple.mobilemail\t(\"INBOX\" \"Sent Messages\")\t2\t" +
                    row["registered"].asString() + "\t" + row["last_seen"].asString()};
    EXPECT_EQ(lines_of(tab.out), expected_tab);

    CommandResult flow = doveadm({"-f", "flow", "xaps", "list"});
    EXPECT_EQ(flow.exit_code, 0) << flow.err;
    EXPECT_NE(flow.out.find(std::string("user=alice account_id=") + e2e::iphone_account_id),
              std::string::npos)
        << flow.out;

    CommandResult table = doveadm({"xaps", "list"});
    EXPECT_EQ(table.exit_code, 0) << table.err;
    ASSERT_EQ(lines_of(table.out).size(), 2u) << table.out;
    EXPECT_NE(lines_of(table.out)[1].find(e2e::iphone_device_token), std::string::npos);
}

// A mailbox name may hold a comma, a space, a quote or a backslash: the list
// shows each name quoted, so every list reads back one way.
TEST_F(E2eDoveadm, ListQuotesMailboxNamesThatHoldSeparators) {
    start_dovecot();
    {
        ImapClient imap(dovecot_->imap_port());
        ASSERT_TRUE(imap.login("alice", DovecotInstance::password).ok());
        // The IMAP quoted strings "Sent, old", "a\"b" and "back\\slash".
        ImapResponse reply = imap.command(
            std::string("XAPPLEPUSHSERVICE \"aps-version\" \"2\" \"aps-account-id\" \"") +
            e2e::iphone_account_id + "\" \"aps-device-token\" \"" + e2e::iphone_device_token +
            R"(" "aps-subtopic" "com.apple.mobilemail" "mailboxes" )" +
            R"(("INBOX" "Sent, old" "a\"b" "back\\slash"))");
        ASSERT_TRUE(reply.ok()) << reply.tagged;
    }
    ASSERT_EQ(stored("alice").size(), 1u);
    EXPECT_EQ(stored("alice")[0].mailboxes,
              (std::vector<std::string>{"INBOX", "Sent, old", "a\"b", R"(back\slash)"}));

    const std::string printed = R"(("INBOX" "Sent, old" "a\"b" "back\\slash"))";
    Json::Value rows = doveadm_json({"xaps", "list"});
    ASSERT_EQ(rows.size(), 1u) << rows;
    EXPECT_EQ(rows[0]["mailboxes"], printed);

    CommandResult tab = doveadm({"-f", "tab", "xaps", "list"});
    EXPECT_EQ(tab.exit_code, 0) << tab.err;
    ASSERT_EQ(lines_of(tab.out).size(), 2u) << tab.out;
    EXPECT_NE(lines_of(tab.out)[1].find("\tcom.apple.mobilemail\t" + printed + "\t2\t"),
              std::string::npos)
        << tab.out;
}

TEST_F(E2eDoveadm, PurgeNeedsOneSelectorAndCountsWhatItRemoved) {
    start_dovecot();
    register_iphone();

    for (const auto &args :
         std::vector<std::vector<std::string>>{{"xaps", "purge"},
                                               {"xaps", "purge", "-u", "alice", "-A"},
                                               {"xaps", "purge", "-u", ""}}) {
        CommandResult result = doveadm(args);
        EXPECT_EQ(result.exit_code, EX_USAGE) << args.size();
        EXPECT_NE(result.err.find("usage: doveadm xaps purge"), std::string::npos) << result.err;
    }
    EXPECT_EQ(stored().size(), 1u) << "a refused purge removes nothing";

    EXPECT_EQ(doveadm_json({"xaps", "purge", "-t", second_token})[0]["removed"], 0);
    // Tokens are matched in any case, as iOS sends them upper-case.
    std::string upper_token = e2e::iphone_device_token;
    for (char &c : upper_token) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    EXPECT_EQ(doveadm_json({"xaps", "purge", "-t", upper_token})[0]["removed"], 1);
    EXPECT_TRUE(stored().empty());

    register_iphone();
    EXPECT_EQ(doveadm_json({"xaps", "purge", "-u", "bob"})[0]["removed"], 0);
    EXPECT_EQ(doveadm_json({"xaps", "purge", "-u", "alice"})[0]["removed"], 1);
    EXPECT_TRUE(stored().empty());

    register_iphone();
    CommandResult all = doveadm({"xaps", "purge", "-A"});
    EXPECT_EQ(all.exit_code, 0) << all.err;
    EXPECT_EQ(all.out, "removed=1\n");
    EXPECT_TRUE(stored().empty());
}

// The copy itself runs in test-e2e-several-backends (it needs a database).
TEST_F(E2eDoveadm, MigrateNeedsADirectionAndASharedStore) {
    start_dovecot();
    for (const auto &args : std::vector<std::vector<std::string>>{
             {"xaps", "migrate"}, {"xaps", "migrate", "to-lmdb"}, {"xaps", "migrate", ""}}) {
        CommandResult result = doveadm(args);
        EXPECT_EQ(result.exit_code, EX_USAGE) << args.size();
        EXPECT_NE(result.err.find("(usage: doveadm xaps migrate to-shared | to-local)"),
                  std::string::npos)
            << result.err;
    }
    for (const char *direction : {"to-shared", "to-local"}) {
        CommandResult result = doveadm({"xaps", "migrate", direction});
        EXPECT_EQ(result.exit_code, EX_CONFIG) << result.err;
        EXPECT_NE(result.err.find("xaps migrate: xaps_shared_store is not set"), std::string::npos)
            << result.err;
        EXPECT_EQ(result.out, "");
    }
}

TEST_F(E2eDoveadm, StatusShowsTheWorkersFigures) {
    start_dovecot();
    register_iphone();

    Json::Value rows = doveadm_json({"xaps", "status"});
    ASSERT_TRUE(rows.isArray());
    std::map<std::string, std::string> status;
    for (const auto &row : rows) {
        ASSERT_EQ(row.size(), 2u) << row;
        status[row["key"].asString()] = row["value"].asString();
    }
    EXPECT_EQ(status["topic"], e2e::apns_topic());
    EXPECT_EQ(status["credential"], "pem");
    EXPECT_EQ(status["registrations"], "1");
    EXPECT_TRUE(status.contains("apns_connected")) << rows;
    EXPECT_TRUE(status.contains("pushes_sent")) << rows;
}

TEST_F(E2eDoveadm, TestPushesNowAndShowsApplesAnswer) {
    start_dovecot();
    register_iphone();

    Json::Value answers = doveadm_json({"xaps", "test", "-u", "alice"});
    ASSERT_EQ(answers.size(), 1u) << answers;
    EXPECT_EQ(answers[0]["account_id"], e2e::iphone_account_id);
    EXPECT_EQ(answers[0]["device_token"], e2e::iphone_device_token);
    EXPECT_EQ(answers[0]["status"], 200);
    ASSERT_TRUE(apns_->wait_for_requests(1, push_timeout));
    std::vector<MockApnsRequest> pushes = apns_->requests();
    ASSERT_EQ(pushes.size(), 1u);
    EXPECT_EQ(pushes[0].device_token, e2e::iphone_device_token);
    Json::Value body = parse_json(pushes[0].body);
    EXPECT_EQ(body["aps"]["account-id"], e2e::iphone_account_id);

    CommandResult nobody = doveadm({"xaps", "test", "-u", "bob"});
    EXPECT_EQ(nobody.exit_code, EX_NOUSER);
    EXPECT_NE(nobody.err.find("bob has no registered device"), std::string::npos) << nobody.err;
    CommandResult no_user = doveadm({"xaps", "test"});
    EXPECT_EQ(no_user.exit_code, EX_USAGE) << no_user.err;

    // Apple refuses the token: the answer is shown, the command fails, and
    // the worker forgets the device.
    apns_->set_responder([](const MockApnsRequest &) {
        MockApnsResponse response;
        response.status = 400;
        response.reason = "BadDeviceToken";
        return response;
    });
    Json::Value refused = doveadm_json({"xaps", "test", "-u", "alice"}, EX_DATAERR);
    ASSERT_EQ(refused.size(), 1u) << refused;
    EXPECT_EQ(refused[0]["status"], 400);
    EXPECT_EQ(refused[0]["reason"], "BadDeviceToken");
    EXPECT_TRUE(stored("alice").empty());
}

TEST_F(E2eDoveadm, ImportsXapsdDatabaseOnceAndItsDevicesGetPushes) {
    start_dovecot();
    register_iphone();
    // As xapsd writes it: alice's iPhone is already registered here; bob's
    // B-1 is new, with a modified UTF-7 mailbox name; B-2 has no time (files
    // of old xapsd versions).
    const std::int64_t b1_time = unix_now() - 2 * 86400;
    Json::Value file;
    Json::Value &iphone = file["Users"]["alice"]["Accounts"][e2e::iphone_account_id];
    iphone["DeviceToken"] = e2e::iphone_device_token;
    iphone["Mailboxes"].append("INBOX");
    // Go writes local time with nanoseconds: here UTC+01:00.
    std::string local_time = format_iso8601_utc(unix_now() - 86400 + 3600);
    local_time.pop_back();
    iphone["RegistrationTime"] = local_time + ".123456789+01:00";
    Json::Value &b1 = file["Users"]["bob"]["Accounts"]["B-1"];
    b1["DeviceToken"] = second_token;
    b1["Mailboxes"].append("Inbox");
    b1["Mailboxes"].append("Entw&APw-rfe");
    b1["RegistrationTime"] = format_iso8601_utc(b1_time);
    Json::Value &b2 = file["Users"]["bob"]["Accounts"]["B-2"];
    b2["DeviceToken"] = third_token;
    b2["Mailboxes"].append("INBOX");
    const std::string database = Json::writeString(Json::StreamWriterBuilder(), file);
    const std::string path = write_file("database.json", database);
    const std::int64_t before = unix_now();

    Json::Value counts = doveadm_json({"xaps", "import", path});
    ASSERT_EQ(counts.size(), 1u) << counts;
    EXPECT_EQ(counts[0]["imported"], 2);
    EXPECT_EQ(counts[0]["present"], 1);
    EXPECT_EQ(counts[0]["skipped"], 0);

    std::vector<xaps::Registration> bob = stored("bob");
    ASSERT_EQ(bob.size(), 2u);
    EXPECT_EQ(bob[0].account_id, "B-1");
    EXPECT_EQ(bob[0].device_token, second_token);
    EXPECT_EQ(bob[0].subtopic, "com.apple.mobilemail");
    EXPECT_EQ(bob[0].mailboxes, (std::vector<std::string>{"INBOX", "Entwürfe"}));
    EXPECT_EQ(bob[0].registered_at, b1_time) << "xapsd's time is kept";
    EXPECT_EQ(bob[1].account_id, "B-2");
    EXPECT_GE(bob[1].registered_at, before) << "no time in the file: now";
    std::vector<xaps::Registration> alice = stored("alice");
    ASSERT_EQ(alice.size(), 1u);
    EXPECT_GE(alice[0].registered_at, before - 60) << "a present registration is left alone";
    EXPECT_EQ(alice[0].mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));

    // Idempotent.
    Json::Value again = doveadm_json({"xaps", "import", path});
    EXPECT_EQ(again[0]["imported"], 0);
    EXPECT_EQ(again[0]["present"], 3);
    EXPECT_EQ(stored().size(), 3u);

    // An imported device is a device like any other: bob's mail wakes it.
    LmtpClient lmtp(dovecot_->lmtp_port());
    SmtpReply delivery =
        lmtp.deliver("sender@example.net", "bob@example.com",
                     make_test_message("sender@example.net", "bob@example.com", "Hi", "Hello.\n"));
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns_->wait_for_requests(2, push_timeout)) << dovecot_->log();
    std::set<std::string> pushed;
    for (const auto &push : apns_->requests()) {
        pushed.insert(push.device_token);
    }
    EXPECT_EQ(pushed, (std::set<std::string>{second_token, third_token}));
}

TEST_F(E2eDoveadm, ImportReportsBadFilesAndEntries) {
    start_dovecot();

    const std::string partly_bad = write_file("partly-bad.json", R"({"Users": {"bob": {"Accounts": {
        "B-1": {"DeviceToken": "not hex", "Mailboxes": ["INBOX"]},
        "B-2": {"DeviceToken": "0a0b", "Mailboxes": ["INBOX"]},
        "B-3": {"DeviceToken": "0c0d", "Mailboxes": []},
        "B-4": {"DeviceToken": "0e0f", "Mailboxes": ["INBOX"],
                "RegistrationTime": "2001-02-03T04:05:06Z"}}}}})");
    CommandResult partly = doveadm({"-f", "json", "xaps", "import", partly_bad});
    EXPECT_EQ(partly.exit_code, EX_DATAERR) << partly.err;
    Json::Value counts = parse_json(partly.out);
    EXPECT_EQ(counts[0]["imported"], 1);
    EXPECT_EQ(counts[0]["skipped"], 3);
    EXPECT_NE(partly.err.find("skipped 'bob' account 'B-1': DeviceToken is not"), std::string::npos)
        << partly.err;
    EXPECT_NE(partly.err.find("skipped 'bob' account 'B-3': no mailboxes"), std::string::npos)
        << partly.err;
    EXPECT_NE(partly.err.find("skipped 'bob' account 'B-4': expired: last registered at "
                              "2001-02-03T04:05:06Z"),
              std::string::npos)
        << partly.err;
    EXPECT_EQ(stored("bob").size(), 1u);

    const std::vector<std::pair<std::string, int>> rows = {
        {write_file("not-json.json", "Users: bob\n"), EX_DATAERR},
        {write_file("not-xapsd.json", R"({"users": {}})"), EX_DATAERR},
        {dovecot_->dir() + "/missing.json", EX_NOINPUT},
    };
    for (const auto &[path, code] : rows) {
        CommandResult result = doveadm({"xaps", "import", path});
        EXPECT_EQ(result.exit_code, code) << path << ": " << result.err;
        EXPECT_NE(result.err.find("xaps import: "), std::string::npos) << result.err;
        EXPECT_EQ(result.out, "") << path;
    }
    EXPECT_EQ(stored().size(), 1u);
}

TEST_F(E2eDoveadm, UnreachableWorkerIsATemporaryFailure) {
    DovecotOptions options = e2e::dovecot_options(apns_->port());
    options.enable_worker = false;
    start_dovecot(std::move(options));

    const std::string database =
        write_file("database.json", R"({"Users": {"bob": {"Accounts": {"B": {
        "DeviceToken": "0a0b", "Mailboxes": ["INBOX"]}}}}})");
    for (const auto &args : std::vector<std::vector<std::string>>{{"xaps", "list"},
                                                                  {"xaps", "status"},
                                                                  {"xaps", "purge", "-A"},
                                                                  {"xaps", "test", "-u", "alice"},
                                                                  {"xaps", "import", database}}) {
        CommandResult result = doveadm(args);
        EXPECT_EQ(result.exit_code, EX_TEMPFAIL) << args[1] << ": " << result.err;
        // At once: refused at connect(), not given up after a reply timeout.
        EXPECT_NE(result.err.find("cannot reach the xaps worker: connect("), std::string::npos)
            << result.err;
        EXPECT_EQ(result.out, "") << args[1];
    }
}

TEST_F(E2eDoveadm, HashPasswordPrintsWhatXapsdPrinted) {
    start_dovecot();
    // Go: hex.EncodeToString(sha256.Sum256([]byte("secret"))), the line
    // without its newline.
    CommandResult result = doveadm({"xaps", "hash-password"}, "secret\n");
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(result.out, "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n");
    EXPECT_EQ(result.err, "") << "no prompt when stdin is not a terminal";

    CommandResult empty = doveadm({"xaps", "hash-password"}, "\n");
    EXPECT_EQ(empty.exit_code, EX_USAGE) << empty.err;
    EXPECT_EQ(empty.out, "");
}

} // namespace
