// End to end: XAPPLEPUSHSERVICE as iOS Mail speaks it (and as broken or
// hostile clients do), against a real Dovecot with the xaps plugin and worker.
// Every accepted form must register what the README's contract says; every
// bad one must be answered NO or BAD with the session going on and no
// Dovecot process dying.
#include "e2e-fixture.h"
#include "unique-fd.h"
#include "xaps-error.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <poll.h>
#include <regex>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using xaps::Registration;

std::string replace_all(std::string text, const std::string &from, const std::string &to) {
    for (std::size_t at = text.find(from); at != std::string::npos;
         at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
    }
    return text;
}

// A command as its raw pieces: "<tag> " + segments[0], then every further
// segment once the server asked for it with a "+" continuation (the segment
// before it ended with a synchronizing literal "{N}\r\n"). The last segment
// goes without CRLF: it is added here.
ImapResponse send_segments(ImapClient &imap, const std::string &tag,
                           const std::vector<std::string> &segments) {
    imap.send_raw(tag + " " + segments.front());
    for (std::size_t i = 1; i < segments.size(); i++) {
        std::string line = imap.read_line();
        if (line.starts_with(tag + " ")) {
            ImapResponse early;
            early.tag = tag;
            early.tagged = line;
            return early; // the server refused before the literal
        }
        EXPECT_TRUE(line.starts_with("+")) << "expected a continuation, got " << line;
        imap.send_raw(segments[i]);
    }
    imap.send_raw("\r\n");
    return imap.read_response(tag);
}

std::string topic_line(const std::string &version) {
    return R"(* XAPPLEPUSHSERVICE "aps-version" ")" + version + R"(" "aps-topic" ")" +
           apns_topic() + "\"";
}

std::vector<std::string> xaps_lines(const ImapResponse &reply) {
    std::vector<std::string> lines;
    for (const auto &line : reply.untagged) {
        if (line.starts_with("* XAPPLEPUSHSERVICE")) {
            lines.push_back(line);
        }
    }
    return lines;
}

// The "<tag> OK" completion, with Dovecot's optional timing.
bool completed(const ImapResponse &reply) {
    static const std::regex line(R"(\S+ OK XAPPLEPUSHSERVICE completed( \([0-9.+ ]+ secs\))?\.)");
    return std::regex_match(reply.tagged, line);
}

class E2eXapplepushservice : public E2eTest {};

// What iOS (and other clients) send, in every form the contract accepts.
// $A is the account id, $T the row's device token.
struct AcceptedForm {
    const char *name;
    std::vector<std::string> segments;
    std::vector<std::string> echoed;           // the "mailbox" lines' names, as IMAP strings
    std::string version;                       // in the reply and the registration
    std::vector<std::string> stored_mailboxes; // UTF-8
};

TEST_F(E2eXapplepushservice, AcceptsEveryFormIosSends) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();

    const std::string pairs_tail = R"( "aps-subtopic" "com.apple.mobilemail")";
    // One device per row: at most xaps_max_devices_per_user (16) rows.
    const std::vector<AcceptedForm> forms = {
        {"iOS 16+: an extra sender pair",
         {R"(XAPPLEPUSHSERVICE "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")"
          R"( "aps-subtopic" "com.apple.mobilemail" "sender" "alice@example.com")"
          R"( "mailboxes" ("INBOX" "Sent Messages"))"},
         {R"("INBOX")", R"("Sent Messages")"},
         "2",
         {"INBOX", "Sent Messages"}},
        {"unknown pairs with a list, a nested list and NIL as values",
         {R"(XAPPLEPUSHSERVICE "x-future" ("a" ("b" ("c"))) "aps-version" "2" "x-nil" NIL)"
          R"( "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail + R"( "mailboxes" ("INBOX"))"},
         {R"("INBOX")"},
         "2",
         {"INBOX"}},
        {"an unknown pair nested 1,000 lists deep",
         {R"(XAPPLEPUSHSERVICE "x-deep" )" + std::string(1000, '(') + std::string(1000, ')') +
          R"( "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")" + pairs_tail},
         {R"("INBOX")"},
         "2",
         {"INBOX"}},
        {"pairs in another order",
         {R"(XAPPLEPUSHSERVICE "mailboxes" ("Sent Messages" "INBOX") "aps-subtopic")"
          R"( "com.apple.mobilemail" "aps-device-token" "$T" "aps-account-id" "$A")"
          R"( "aps-version" "2")"},
         {R"("Sent Messages")", R"("INBOX")"},
         "2",
         {"Sent Messages", "INBOX"}},
        {"keys in other case",
         {R"(XAPPLEPUSHSERVICE "APS-VERSION" "2" "Aps-Account-Id" "$A" "APS-device-TOKEN" "$T")"
          R"( "aps-SUBTOPIC" "com.apple.mobilemail" "MailBoxes" ("INBOX"))"},
         {R"("INBOX")"},
         "2",
         {"INBOX"}},
        {"atoms instead of quoted strings",
         {R"(XAPPLEPUSHSERVICE aps-version 2 aps-account-id $A aps-device-token $T)"
          R"( aps-subtopic com.apple.mobilemail mailboxes (INBOX Archive))"},
         {R"("INBOX")", R"("Archive")"},
         "2",
         {"INBOX", "Archive"}},
        {"synchronizing literals {N}",
         {R"(XAPPLEPUSHSERVICE "aps-version" {1})"
          "\r\n",
          R"(2 "aps-account-id" {36})"
          "\r\n",
          R"($A "aps-device-token" "$T")" + pairs_tail + R"( "mailboxes" ("INBOX" {13})" + "\r\n",
          "Sent Messages)"},
         {R"("INBOX")", R"("Sent Messages")"},
         "2",
         {"INBOX", "Sent Messages"}},
        {"non-synchronizing literals {N+}",
         {"XAPPLEPUSHSERVICE {11+}\r\naps-version {1+}\r\n2 \"aps-account-id\" {36+}\r\n$A "
          "\"aps-device-token\" {64+}\r\n$T" +
          pairs_tail + " \"mailboxes\" ({13+}\r\nSent Messages)"},
         {R"("Sent Messages")"},
         "2",
         {"Sent Messages"}},
        {"modified UTF-7 names: echoed as sent, registered as UTF-8",
         {R"(XAPPLEPUSHSERVICE "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail + R"( "mailboxes" ("INBOX" "Entw&APw-rfe" "&ZeVnLIqe-" "R&AOk-f &- Co"))"},
         {R"("INBOX")", R"("Entw&APw-rfe")", R"("&ZeVnLIqe-")", R"("R&AOk-f &- Co")"},
         "2",
         {"INBOX", "Entwürfe", "日本語", "Réf & Co"}},
        {"quotes and backslashes in a name: echoed quoted as sent",
         {R"(XAPPLEPUSHSERVICE "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail + R"( "mailboxes" ("say \"hi\" \\o/"))"},
         {R"("say \"hi\" \\o/")"},
         "2",
         {R"(say "hi" \o/)"}},
        {"INBOX in any case, duplicates collapsed, stored as echoed (the phone hashes that)",
         {R"(XAPPLEPUSHSERVICE "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail + R"( "mailboxes" ("inbox" "Sent Messages" "INBOX" "Sent Messages"))"},
         {R"("inbox")", R"("Sent Messages")"},
         "2",
         {"inbox", "Sent Messages"}},
        {"version 2 without mailboxes: INBOX",
         {R"(XAPPLEPUSHSERVICE "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail},
         {R"("INBOX")"},
         "2",
         {"INBOX"}},
        {"version 2 with an empty list: no mailbox",
         {R"(XAPPLEPUSHSERVICE "aps-version" "2" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail + R"( "mailboxes" ())"},
         {},
         "2",
         {}},
        {"version 1 as old iOS sends it: INBOX only, no mailbox lines",
         {R"(XAPPLEPUSHSERVICE "aps-version" "1" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail},
         {},
         "1",
         {"INBOX"}},
        {"version 1 with a list: still INBOX only",
         {R"(XAPPLEPUSHSERVICE "aps-version" "1" "aps-account-id" "$A" "aps-device-token" "$T")" +
          pairs_tail + R"( "mailboxes" ("Sent Messages" "Archive"))"},
         {},
         "1",
         {"INBOX"}},
    };

    for (std::size_t i = 0; i < forms.size(); i++) {
        const AcceptedForm &form = forms[i];
        SCOPED_TRACE(form.name);
        const std::string token = device_token(100 + static_cast<unsigned>(i));
        std::vector<std::string> segments;
        for (const auto &segment : form.segments) {
            segments.push_back(
                replace_all(replace_all(segment, "$A", iphone_account_id), "$T", token));
        }
        ImapResponse reply = send_segments(*imap, "x" + std::to_string(i), segments);
        EXPECT_TRUE(completed(reply)) << joined(reply.lines());
        std::vector<std::string> expected;
        for (const auto &name : form.echoed) {
            expected.push_back(R"(* XAPPLEPUSHSERVICE "mailbox" )" + name);
        }
        expected.push_back(topic_line(form.version));
        EXPECT_EQ(joined(xaps_lines(reply)), joined(expected));

        const std::vector<Registration> stored = registrations();
        const Registration *registration = find_registration(stored, token);
        ASSERT_NE(registration, nullptr) << "not stored";
        EXPECT_EQ(registration->user, "alice");
        EXPECT_EQ(registration->account_id, iphone_account_id);
        EXPECT_EQ(registration->subtopic, "com.apple.mobilemail");
        EXPECT_EQ(std::to_string(registration->aps_version), form.version);
        EXPECT_EQ(registration->mailboxes, form.stored_mailboxes);
        EXPECT_TRUE(imap->command("NOOP").ok());
    }
    EXPECT_EQ(registrations().size(), forms.size()) << "one registration per token";
}

TEST_F(E2eXapplepushservice, UpperCaseTokenIsStoredAndPushedLowerCase) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    PhoneRegistration phone;
    for (char &c : phone.device_token) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    register_phone(*imap, phone);
    ASSERT_EQ(registrations().size(), 1u);
    EXPECT_EQ(registrations()[0].device_token, iphone_device_token);

    EXPECT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<xaps::test::MockApnsRequest> pushes = pushes_settled(1);
    ASSERT_EQ(pushes.size(), 1u);
    EXPECT_EQ(pushes[0].path, std::string("/3/device/") + iphone_device_token);
}

// Every class of input the contract refuses: answered NO or BAD, nothing
// registered, the session goes on, and no Dovecot process dies.
struct RefusedInput {
    const char *name;
    std::vector<std::string> segments; // as AcceptedForm; $A and $T are filled in
    const char *status;                // "NO" or "BAD"
    const char *reason;                // part of the tagged reply: who refused, and why
};

TEST_F(E2eXapplepushservice, RefusesBadInputAndTheSessionGoesOn) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();

    const std::string cmd = "XAPPLEPUSHSERVICE ";
    const std::string version = R"("aps-version" "2" )";
    const std::string account = R"("aps-account-id" "$A" )";
    const std::string token = R"("aps-device-token" "$T" )";
    const std::string subtopic = R"("aps-subtopic" "com.apple.mobilemail" )";
    const std::string inbox = R"("mailboxes" ("INBOX"))";
    const std::string valid_but_mailboxes = cmd + version + account + token + subtopic;
    auto with_token = [&](const std::string &value) {
        return cmd + version + account + R"("aps-device-token" )" + value + " " + subtopic + inbox;
    };
    auto with_account = [&](const std::string &value) {
        return cmd + version + R"("aps-account-id" )" + value + " " + token + subtopic + inbox;
    };
    auto with_mailboxes = [&](const std::string &list) {
        return valid_but_mailboxes + R"("mailboxes" )" + list;
    };
    std::string five_thousand_mailboxes = "(";
    for (int i = 0; i < 5000; i++) {
        five_thousand_mailboxes += (i == 0 ? "\"m" : " \"m") + std::to_string(i) + "\"";
    }
    five_thousand_mailboxes += ")";

    const std::vector<RefusedInput> inputs = {
        {"no arguments", {"XAPPLEPUSHSERVICE"}, "NO", R"(Missing aps-version)"},
        {"missing aps-version",
         {cmd + account + token + subtopic + inbox},
         "NO",
         R"(Missing aps-version)"},
        {"missing aps-account-id",
         {cmd + version + token + subtopic + inbox},
         "NO",
         R"(Missing aps-account-id)"},
        {"missing aps-device-token",
         {cmd + version + account + subtopic + inbox},
         "NO",
         R"(Missing aps-device-token)"},
        {"missing aps-subtopic",
         {cmd + version + account + token + inbox},
         "NO",
         R"(Missing aps-subtopic)"},
        {"unknown aps-version 3",
         {cmd + R"("aps-version" "3" )" + account + token + subtopic + inbox},
         "NO",
         R"(Unsupported aps-version)"},
        {"aps-version 2.0",
         {cmd + R"("aps-version" "2.0" )" + account + token + subtopic + inbox},
         "NO",
         R"(Unsupported aps-version)"},
        {"unsupported aps-subtopic",
         {cmd + version + account + token + R"("aps-subtopic" "com.example.other" )" + inbox},
         "NO",
         R"(Unsupported aps-subtopic)"},
        {"non-hex token", {with_token("\"" + std::string(64, 'g') + "\"")}, "NO", R"(hexadecimal)"},
        {"odd-length token",
         {with_token("\"" + std::string(63, 'a') + "\"")},
         "NO",
         R"(even number)"},
        {"empty token", {with_token(R"("")")}, "NO", R"(Missing aps-device-token)"},
        {"10,000-character token",
         {with_token("\"" + std::string(10000, 'a') + "\"")},
         "NO",
         R"(too long)"},
        {"binary junk in the token",
         {with_token("\"\x80\xff\xfe\x01junk\"")},
         "NO",
         R"(hexadecimal)"},
        {"empty account id", {with_account(R"("")")}, "NO", R"(Missing aps-account-id)"},
        {"129-character account id",
         {with_account("\"" + std::string(129, 'A') + "\"")},
         "NO",
         R"(too long)"},
        {"control character in the account id",
         {with_account("\"a\tb\"")},
         "NO",
         R"(control characters)"},
        {"account id that is not UTF-8", {with_account("\"acc\xff\xfe\"")}, "NO", R"(UTF-8)"},
        {"5,000 mailboxes",
         {with_mailboxes(five_thousand_mailboxes)},
         "NO",
         R"(Too many mailboxes)"},
        {"empty mailbox name", {with_mailboxes(R"(("INBOX" ""))")}, "NO", R"(Empty mailbox name)"},
        {"1,025-byte mailbox name",
         {with_mailboxes("(\"" + std::string(1025, 'm') + "\")")},
         "NO",
         R"(too long)"},
        {"control character in a mailbox name",
         {with_mailboxes("(\"a\tb\")")},
         "NO",
         R"(control characters)"},
        {"invalid modified UTF-7: unterminated",
         {with_mailboxes(R"(("Entw&APw"))")},
         "NO",
         R"(modified UTF-7)"},
        {"invalid modified UTF-7: ASCII encoded",
         {with_mailboxes(R"(("&AGE-"))")},
         "NO",
         R"(modified UTF-7)"},
        {"unbalanced list: no closing parenthesis",
         {with_mailboxes(R"(("INBOX" "Sent")")},
         "BAD",
         R"(Missing ')')"},
        {"unbalanced list: one parenthesis too many",
         {with_mailboxes(R"(("INBOX")))")},
         "BAD",
         R"(Unexpected ')')"},
        {"NUL in a quoted string",
         {with_account(std::string("\"a\0b\"", 5))},
         "BAD",
         R"(NULs not allowed)"},
        // Dovecot passes a NUL inside a literal on; the parser refuses it.
        {"NUL in a literal",
         {with_account(std::string("{3+}\r\na\0b", 9))},
         "NO",
         R"(control characters)"},
        {"binary junk instead of arguments",
         {cmd + "\x01\xff\xfe(((\x80\x7f\"\\"},
         "BAD",
         R"(Invalid characters)"},
        {"odd number of items",
         {valid_but_mailboxes + R"("mailboxes")"},
         "BAD",
         R"(key/value pairs)"},
        {"a known key twice",
         {with_mailboxes(R"(("INBOX") "aps-version" "2")")},
         "BAD",
         R"(more than once)"},
        {"a list where a string must be",
         {cmd + R"("aps-version" ("2") )" + account + token + subtopic + inbox},
         "BAD",
         R"(must be a string)"},
        {"mailboxes not a list", {with_mailboxes(R"("INBOX")")}, "BAD", R"(must be a list)"},
        {"mailboxes NIL", {with_mailboxes("NIL")}, "BAD", R"(must be a list)"},
        {"a list inside the mailbox list",
         {with_mailboxes(R"(("INBOX" ("Sent")))")},
         "BAD",
         R"(must be strings)"},
        {"a list as a key",
         {cmd + R"(("aps-version") "2" )" + account + token + subtopic + inbox},
         "BAD",
         R"(keys must be strings)"},
    };

    for (std::size_t i = 0; i < inputs.size(); i++) {
        const RefusedInput &input = inputs[i];
        SCOPED_TRACE(input.name);
        std::vector<std::string> segments;
        for (const auto &segment : input.segments) {
            segments.push_back(replace_all(replace_all(segment, "$A", iphone_account_id), "$T",
                                           device_token(static_cast<unsigned>(i))));
        }
        ImapResponse reply = send_segments(*imap, "r" + std::to_string(i), segments);
        EXPECT_EQ(reply.status(), input.status) << reply.tagged;
        EXPECT_NE(reply.tagged.find(input.reason), std::string::npos) << reply.tagged;
        EXPECT_EQ(joined(xaps_lines(reply)), "") << "no reply lines for a refused registration";
        ImapResponse noop = imap->command("NOOP");
        ASSERT_TRUE(noop.ok()) << "the session must go on: " << noop.tagged;
    }
    EXPECT_EQ(registrations().size(), 0u);
    EXPECT_EQ(apns_->requests_received(), 0u);
}

// Modified UTF-7 spells what a quoted string may not hold: "&AAE-" is U+0001,
// "&ABs-" ESC, "&AH8-" DEL and "&AJs-" the C1 control CSI. Such names are
// refused as raw control characters are, and no part of the request is stored:
// neither a new device nor a changed mailbox set for a known one.
TEST_F(E2eXapplepushservice, MailboxNamesDecodingToControlCharactersAreRefused) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    PhoneRegistration known;
    register_phone(*imap, known);
    const std::vector<Registration> before = registrations();
    ASSERT_EQ(before.size(), 1u);

    for (const std::string name : {"&AAE-", "Sent&ABs-", "&AH8-", "&AJs-"}) {
        SCOPED_TRACE(name);
        PhoneRegistration changed = known;
        changed.mailboxes = {"INBOX", name};
        PhoneRegistration added;
        added.device_token = device_token(7);
        added.mailboxes = {name};
        for (const PhoneRegistration &phone : {changed, added}) {
            ImapResponse reply = imap->command(xapplepushservice_command(phone));
            EXPECT_EQ(reply.status(), "NO") << reply.tagged;
            EXPECT_NE(reply.tagged.find("Mailbox name contains control characters"),
                      std::string::npos)
                << reply.tagged;
            EXPECT_EQ(joined(xaps_lines(reply)), "") << "no reply lines for a refused registration";
        }
    }
    ASSERT_TRUE(imap->command("NOOP").ok()) << "the session goes on";
    EXPECT_EQ(registrations(), before);
}

// The account id is the client's opaque string: whatever the contract accepts
// must reach Apple unchanged inside the JSON body.
TEST_F(E2eXapplepushservice, AccountIdReachesAppleIntactAsJson) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    const std::vector<std::string> account_ids = {
        R"(quote"brace}back\slash]bracket)",
        R"({"aps":{"account-id":"forged"}})",
        "Konto M\xc3\xbcller \xe2\x9c\x89",
        std::string(128, 'x'),
    };
    std::map<std::string, std::string> account_by_token;
    for (std::size_t i = 0; i < account_ids.size(); i++) {
        SCOPED_TRACE(account_ids[i]);
        PhoneRegistration phone;
        phone.account_id = account_ids[i];
        phone.device_token = device_token(static_cast<unsigned>(i));
        register_phone(*imap, phone);
        account_by_token[phone.device_token] = phone.account_id;
    }
    for (const Registration &stored : registrations()) {
        EXPECT_EQ(stored.account_id, account_by_token[stored.device_token]);
    }

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> pushes = pushes_settled(account_ids.size());
    ASSERT_EQ(pushes.size(), account_ids.size());
    for (const auto &push : pushes) {
        SCOPED_TRACE(push.body);
        EXPECT_EQ(pushed_account_id(push), account_by_token[push.device_token]);
        std::optional<Json::Value> body = parse_json(push.body);
        ASSERT_TRUE(body);
        EXPECT_EQ(body->getMemberNames(), std::vector<std::string>{"aps"});
        EXPECT_EQ((*body)["aps"].getMemberNames(), (std::vector<std::string>{"account-id", "m"}));
    }
}

// A phone restored onto a new phone keeps iOS's account id with a new token:
// both are registered and both are woken up.
TEST_F(E2eXapplepushservice, ClonedDeviceIsASecondRegistrationAndBothGetPushes) {
    start_dovecot(options());
    PhoneRegistration old_phone;
    PhoneRegistration new_phone;
    new_phone.device_token = device_token(2);
    register_phone(*login(), old_phone);
    register_phone(*login(), new_phone);

    const std::vector<Registration> stored = registrations();
    ASSERT_EQ(stored.size(), 2u);
    EXPECT_NE(find_registration(stored, old_phone.device_token), nullptr);
    EXPECT_NE(find_registration(stored, new_phone.device_token), nullptr);

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> pushes = pushes_settled(2);
    ASSERT_EQ(pushes.size(), 2u);
    std::vector<std::string> expected{old_phone.device_token, new_phone.device_token};
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(pushed_tokens(pushes), expected);
    for (const auto &push : pushes) {
        EXPECT_EQ(pushed_account_id(push), iphone_account_id);
    }
}

// Registering again (iOS does on every connection) replaces the mailbox set:
// a mailbox the phone dropped no longer pushes, a new one does.
TEST_F(E2eXapplepushservice, ReRegistrationReplacesTheMailboxSet) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    ASSERT_TRUE(imap->command("CREATE Archive").ok());

    PhoneRegistration phone;
    phone.mailboxes = {"INBOX", "Sent Messages"};
    register_phone(*imap, phone);
    const std::vector<Registration> first = registrations();
    ASSERT_EQ(first.size(), 1u);

    std::this_thread::sleep_for(1100ms); // last_seen has a resolution of one second
    phone.mailboxes = {"Archive"};
    ImapResponse reply = register_phone(*imap, phone);
    EXPECT_EQ(joined(xaps_lines(reply)),
              joined({R"(* XAPPLEPUSHSERVICE "mailbox" "Archive")", topic_line("2")}));
    const std::vector<Registration> second = registrations();
    ASSERT_EQ(second.size(), 1u);
    EXPECT_EQ(second[0].mailboxes, std::vector<std::string>{"Archive"});
    EXPECT_EQ(second[0].registered_at, first[0].registered_at);
    EXPECT_GT(second[0].last_seen, first[0].last_seen);

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_EQ(pushes_settled(0).size(), 0u) << "INBOX is no longer registered";

    const std::string message =
        make_test_message("alice@example.com", "alice@example.com", "Archived", "Keep this.\n");
    imap->send_raw("ap1 APPEND Archive {" + std::to_string(message.size()) + "+}\r\n" + message +
                   "\r\n");
    ASSERT_TRUE(imap->read_response("ap1").ok());
    EXPECT_EQ(pushes_settled(1).size(), 1u);
}

TEST_F(E2eXapplepushservice, CapabilityOnlyAfterLogin) {
    start_dovecot(options());
    ImapClient imap(dovecot_->imap_port());
    EXPECT_FALSE(parse_capabilities(imap.greeting()).contains("XAPPLEPUSHSERVICE"));
    EXPECT_FALSE(imap.capabilities().contains("XAPPLEPUSHSERVICE"));
    ImapResponse before_login = imap.command(xapplepushservice_command(PhoneRegistration{}));
    EXPECT_EQ(before_login.status(), "BAD") << before_login.tagged;

    ImapResponse login = imap.login("alice", DovecotInstance::password);
    ASSERT_TRUE(login.ok());
    EXPECT_TRUE(imap.capabilities().contains("XAPPLEPUSHSERVICE"));
    EXPECT_EQ(registrations().size(), 0u);

    // A client that did not ask for CAPABILITY before logging in learns the
    // post-login capabilities from the LOGIN reply's response code.
    ImapClient fresh(dovecot_->imap_port());
    ImapResponse fresh_login = fresh.login("alice", DovecotInstance::password);
    ASSERT_TRUE(fresh_login.ok());
    EXPECT_TRUE(parse_capabilities(fresh_login.tagged).contains("XAPPLEPUSHSERVICE"))
        << fresh_login.tagged;
}

// Without a credential the worker cannot push: the phone must not be told it
// will get pushes, and mail must flow as usual.
TEST_F(E2eXapplepushservice, NoCredentialNoCapabilityAndMailStillFlows) {
    DovecotOptions no_credential = options();
    no_credential.plugin_settings["xaps_apns_cert_file"] = "";
    no_credential.plugin_settings["xaps_apns_key_file"] = "";
    start_dovecot(std::move(no_credential));

    std::unique_ptr<ImapClient> imap = login();
    EXPECT_FALSE(imap->capabilities().contains("XAPPLEPUSHSERVICE"));
    ImapResponse reply = imap->command(xapplepushservice_command(PhoneRegistration{}));
    EXPECT_TRUE(reply.status() == "BAD" || reply.status() == "NO") << reply.tagged;
    EXPECT_EQ(joined(xaps_lines(reply)), "");
    EXPECT_TRUE(imap->command("NOOP").ok());
    // The worker's one line says what to configure; imap processes only
    // debug-log it (each login is a new process).
    EXPECT_TRUE(dovecot_->wait_for_log("no APNs credential configured", push_timeout))
        << dovecot_->log();
    EXPECT_EQ(dovecot_->log().find("XAPPLEPUSHSERVICE is not offered"), std::string::npos);

    EXPECT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_EQ(registrations().size(), 0u);
    // Nor later: without a client certificate no request of the worker's can
    // pass the mock's TLS handshake, as none would pass Apple's.
    EXPECT_EQ(apns_->requests_received(), 0u);
}

// A credential that is configured but unusable: the capability is offered
// (the configuration says push), but no phone is told it registered.
TEST_F(E2eXapplepushservice, UnusableCredentialAnswersUnavailable) {
    DovecotOptions broken = options();
    broken.plugin_settings["xaps_apns_cert_file"] =
        dovecot_options(0).pki_dir + "/no-such-cert.pem";
    start_dovecot(std::move(broken));

    std::unique_ptr<ImapClient> imap = login();
    ImapResponse reply = imap->command(xapplepushservice_command(PhoneRegistration{}));
    EXPECT_TRUE(reply.tagged.starts_with(reply.tag + " NO [UNAVAILABLE]")) << reply.tagged;
    EXPECT_EQ(joined(xaps_lines(reply)), "");
    EXPECT_TRUE(imap->command("NOOP").ok());
    EXPECT_EQ(registrations().size(), 0u);
    EXPECT_EQ(deliver_to("alice@example.com").code, 250);
}

// The worker checks every registration again with its own settings. When it
// refuses one the phone is told NO for good, not "unavailable, try again":
// here a userdb field widens xaps_subtopics for the imap process only.
TEST_F(E2eXapplepushservice, WorkerRefusalIsAFinalNo) {
    DovecotOptions settings = options();
    settings.userdb_fields = "xaps_subtopics=com.example.custom";
    start_dovecot(std::move(settings));

    std::unique_ptr<ImapClient> imap = login();
    ImapResponse reply = imap->command(replace_all(xapplepushservice_command(PhoneRegistration{}),
                                                   "com.apple.mobilemail", "com.example.custom"));
    EXPECT_EQ(reply.status(), "NO") << reply.tagged;
    EXPECT_EQ(reply.tagged.find("[UNAVAILABLE]"), std::string::npos) << reply.tagged;
    EXPECT_NE(reply.tagged.find("Registration refused: aps-subtopic"), std::string::npos)
        << "the worker's refusal, not the parser's: " << reply.tagged;
    EXPECT_EQ(joined(xaps_lines(reply)), "");
    EXPECT_TRUE(imap->command("NOOP").ok());
    EXPECT_EQ(registrations().size(), 0u);
}

// Registrations pipelined with each other and with other commands: each
// gets its own complete reply, never interleaved with another's.
TEST_F(E2eXapplepushservice, PipelinedRegistrationsGetWholeReplies) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    PhoneRegistration first;
    first.device_token = device_token(1);
    first.mailboxes = {"INBOX"};
    PhoneRegistration second;
    second.device_token = device_token(2);
    second.mailboxes = {"Sent Messages", "Archive"};
    imap->send_raw("p1 " + xapplepushservice_command(first) + "\r\np2 NOOP\r\np3 " +
                   xapplepushservice_command(second) + "\r\np4 LIST \"\" INBOX\r\n");

    std::map<std::string, std::vector<std::string>> lines_before; // tag -> lines since the last tag
    std::vector<std::string> current;
    while (lines_before.size() < 4) {
        std::string line = imap->read_line();
        if (line.starts_with("* ")) {
            current.push_back(line);
            continue;
        }
        std::string tag = line.substr(0, line.find(' '));
        EXPECT_TRUE(line.starts_with(tag + " OK")) << line;
        current.push_back(line);
        lines_before[tag] = std::move(current);
        current.clear();
    }
    auto own_lines = [](const std::vector<std::string> &lines) {
        std::vector<std::string> xaps;
        for (const auto &line : lines) {
            if (line.starts_with("* XAPPLEPUSHSERVICE")) {
                xaps.push_back(line);
            }
        }
        return joined(xaps);
    };
    EXPECT_EQ(own_lines(lines_before["p1"]),
              joined({R"(* XAPPLEPUSHSERVICE "mailbox" "INBOX")", topic_line("2")}));
    EXPECT_EQ(own_lines(lines_before["p3"]),
              joined({R"(* XAPPLEPUSHSERVICE "mailbox" "Sent Messages")",
                      R"(* XAPPLEPUSHSERVICE "mailbox" "Archive")", topic_line("2")}));
    EXPECT_EQ(own_lines(lines_before["p2"]) + own_lines(lines_before["p4"]), "");
    EXPECT_EQ(registrations().size(), 2u);

    // LOGOUT right behind a registration: the session ends cleanly whether
    // or not the registration's answer made it out first.
    PhoneRegistration third;
    third.device_token = device_token(3);
    imap->send_raw("p5 " + xapplepushservice_command(third) + "\r\np6 LOGOUT\r\n");
    ImapResponse logout = imap->read_response("p6");
    EXPECT_TRUE(logout.ok()) << logout.tagged;
    EXPECT_TRUE(imap->wait_for_close(5s));
}

// The instance's xaps-worker process (the master's child running the built
// worker), or -1.
pid_t worker_pid(const DovecotInstance &dovecot) {
    namespace fs = std::filesystem;
    const fs::path worker = fs::canonical(worker_path);
    for (const auto &entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::ifstream stat_file(entry.path() / "stat");
        std::string stat((std::istreambuf_iterator<char>(stat_file)), {});
        // "pid (comm) state ppid ...": comm may hold spaces, so parse after ')'.
        std::istringstream after_comm(stat.substr(stat.rfind(')') + 1));
        std::string state;
        pid_t parent = -1;
        after_comm >> state >> parent;
        std::error_code error;
        if (parent == dovecot.master_pid() &&
            fs::read_symlink(entry.path() / "exe", error) == worker) {
            return static_cast<pid_t>(std::stol(name));
        }
    }
    return -1;
}

// Once the phone got OK its registration is on disk: a worker killed with
// SIGKILL comes back (the master respawns it) with every registration, and
// the imap and lmtp processes that talked to the dead one reconnect.
TEST_F(E2eXapplepushservice, RegistrationSurvivesAWorkerCrash) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    register_phone(*imap, PhoneRegistration{});
    ASSERT_EQ(deliver_to("alice@example.com").code, 250); // lmtp now holds a connection
    ASSERT_EQ(pushes_settled(1).size(), 1u);

    const pid_t killed = worker_pid(*dovecot_);
    ASSERT_GT(killed, 0);
    expected_log_lines_.push_back("child " + std::to_string(killed) + " killed with signal 9");
    ASSERT_EQ(::kill(killed, SIGKILL), 0);
    const auto deadline = std::chrono::steady_clock::now() + push_timeout;
    pid_t respawned = -1;
    while ((respawned = worker_pid(*dovecot_)) <= 0 || respawned == killed) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no new worker";
        std::this_thread::sleep_for(50ms);
    }
    std::vector<Registration> stored;
    while (std::chrono::steady_clock::now() < deadline) {
        try {
            stored = registrations();
            break;
        } catch (const xaps::Error &) {
            std::this_thread::sleep_for(100ms); // still starting
        }
    }
    ASSERT_EQ(stored.size(), 1u) << "the registration must survive";
    EXPECT_EQ(stored[0].device_token, iphone_device_token);

    apns_->clear_requests();
    register_phone(*imap, PhoneRegistration{}); // the same imap process, a new connection
    EXPECT_TRUE(imap->command("NOOP").ok());
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_EQ(pushes_settled(1).size(), 1u) << dovecot_->log();
}

// A unix socket standing in for the worker that accepts connections and
// either never answers (reading and discarding what comes) or hangs up at once.
class FakeWorker {
public:
    enum class Behaviour { silent, hang_up };

    FakeWorker(std::string path, Behaviour behaviour)
        : path_(std::move(path)), behaviour_(behaviour) {
        listener_ = xaps::test::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
        if (listener_.get() < 0 ||
            ::bind(listener_.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) < 0 ||
            ::chmod(path_.c_str(), 0666) < 0 || ::listen(listener_.get(), 16) < 0) {
            throw xaps::Error(xaps::ErrorKind::internal,
                              "fake worker " + path_ + ": " + std::strerror(errno));
        }
        thread_ = std::thread([this] { run(); });
    }
    ~FakeWorker() {
        stop_ = true;
        thread_.join();
    }
    FakeWorker(const FakeWorker &) = delete;
    FakeWorker &operator=(const FakeWorker &) = delete;

    std::size_t connections() const { return connections_; }
    std::size_t bytes_received() const { return bytes_; }

private:
    void run() {
        std::vector<xaps::test::UniqueFd> clients;
        while (!stop_) {
            std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
            for (const auto &client : clients) {
                fds.push_back({client.get(), POLLIN, 0});
            }
            if (::poll(fds.data(), fds.size(), 50) <= 0) {
                continue;
            }
            if ((fds[0].revents & POLLIN) != 0) {
                xaps::test::UniqueFd client(
                    ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (client.get() >= 0) {
                    ++connections_;
                    if (behaviour_ == Behaviour::silent) {
                        clients.push_back(std::move(client));
                    }
                }
            }
            for (std::size_t i = 1; i < fds.size(); i++) {
                if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                    char buffer[4096];
                    ssize_t n = ::read(fds[i].fd, buffer, sizeof(buffer));
                    if (n > 0) {
                        bytes_ += static_cast<std::size_t>(n);
                    }
                }
            }
        }
    }

    std::string path_;
    Behaviour behaviour_;
    xaps::test::UniqueFd listener_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> connections_{0};
    std::atomic<std::size_t> bytes_{0};
    std::thread thread_;
};

// The phone waits for the answer: a worker that does not answer is reported
// unavailable after the plugin's 5 s reply timeout (the README's promise), one
// that hangs up at once without waiting for it; other commands are served
// meanwhile, and mail delivery never waits for the worker. Which way the
// answer came is read from the plugin's warning, not from a stopwatch.
TEST_F(E2eXapplepushservice, UnresponsiveWorkerIsUnavailableAndBlocksNothing) {
    struct Row {
        const char *name;
        FakeWorker::Behaviour behaviour;
        std::chrono::milliseconds at_least; // the reply timeout, when waited for
        const char *warning;                // the plugin's, for this way of failing
    };
    const std::vector<Row> rows = {
        {"accepts and never answers", FakeWorker::Behaviour::silent, 4500ms,
         "no reply from the worker to request"},
        {"hangs up at once", FakeWorker::Behaviour::hang_up, 0ms, "connection to the worker lost"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        xaps::test::TemporaryDirectory socket_dir;
        const std::string socket_path = socket_dir.path() + "/fake-worker";
        FakeWorker fake(socket_path, row.behaviour);
        DovecotOptions settings = options();
        settings.plugin_settings["xaps_socket_path"] = socket_path;
        start_dovecot(std::move(settings));

        // A phone that gives up and disconnects while its registration waits:
        // the late timeout must not touch the freed command.
        {
            std::unique_ptr<ImapClient> impatient = login();
            impatient->send_raw("gone " + xapplepushservice_command(PhoneRegistration{}) + "\r\n");
        }

        std::unique_ptr<ImapClient> imap = login();
        ASSERT_TRUE(imap->capabilities().contains("XAPPLEPUSHSERVICE"));
        const auto started = std::chrono::steady_clock::now();
        imap->send_raw("reg " + xapplepushservice_command(PhoneRegistration{}) +
                       "\r\nping NOOP\r\n");
        ImapResponse noop = imap->read_response("ping");
        EXPECT_TRUE(noop.ok()) << noop.tagged;
        ImapResponse reply;
        const bool registration_answered_first =
            std::find_if(noop.untagged.begin(), noop.untagged.end(), [](const std::string &l) {
                return l.starts_with("reg ");
            }) != noop.untagged.end();
        if (!registration_answered_first) {
            reply = imap->read_response("reg");
        } else {
            reply.tag = "reg";
            for (const auto &line : noop.untagged) {
                if (line.starts_with("reg ")) {
                    reply.tagged = line;
                }
            }
        }
        const auto elapsed = std::chrono::steady_clock::now() - started;
        EXPECT_TRUE(reply.tagged.starts_with("reg NO [UNAVAILABLE]")) << reply.tagged;
        EXPECT_GE(elapsed, row.at_least);
        EXPECT_TRUE(dovecot_->wait_for_log(row.warning, push_timeout)) << dovecot_->log();
        if (row.behaviour == FakeWorker::Behaviour::silent) {
            EXPECT_FALSE(registration_answered_first) << "NOOP must not wait for the registration";
            EXPECT_GT(fake.bytes_received(), 0u) << "the plugin never wrote to the worker";
        }
        EXPECT_GE(fake.connections(), 1u);
        EXPECT_TRUE(imap->command("NOOP").ok());

        // NOTIFY expects no answer: the delivery is answered although the
        // worker never answers anything.
        EXPECT_EQ(deliver_to("alice@example.com").code, 250);

        imap.reset();
        dovecot_->stop();
        expect_clean_log();
        if (row.behaviour == FakeWorker::Behaviour::hang_up) {
            // Complete now that Dovecot stopped: a timeout would have been
            // logged before the NO it caused.
            EXPECT_EQ(dovecot_->log().find("no reply from the worker"), std::string::npos)
                << "answered by the reply timeout, not by the hang-up\n"
                << dovecot_->log();
        }
        dovecot_.reset();
    }
    EXPECT_EQ(apns_->requests_received(), 0u);
}

// Push user names are compared case-insensitively: here the userdb gives the
// imap process "ALICE" and the lmtp process "alice" as xaps_user_lookup field.
TEST_F(E2eXapplepushservice, PushUserNamesCompareCaseInsensitively) {
    DovecotOptions settings = options();
    if (installed_dovecot_version().at_least(2, 4)) {
        // No %{if} on the protocol in 2.4's userdb: a protocol filter picks
        // the upper-case field for imap.
        settings.userdb_fields = "xaps_push_user=%{user|upper} xaps_push_user_lower=%{user}";
        settings.plugin_settings["xaps_user_lookup"] = "xaps_push_user_lower";
        settings.extra_config = "protocol imap {\n  xaps_user_lookup = xaps_push_user\n}\n";
    } else {
        settings.userdb_fields = "xaps_push_user=%{if;%s;eq;imap;%Uu;%Lu}";
        settings.plugin_settings["xaps_user_lookup"] = "xaps_push_user";
    }
    start_dovecot(std::move(settings));

    register_phone(*login(), PhoneRegistration{});
    const std::vector<Registration> stored = registrations("alice");
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0].user, "ALICE") << "the userdb field, not the login name";

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> pushes = pushes_settled(1);
    ASSERT_EQ(pushes.size(), 1u);
    EXPECT_EQ(pushes[0].device_token, iphone_device_token);
}

} // namespace
