#include "xapsd-import.h"

#include "xaps-error.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <unistd.h>

using xaps::Error;
using xaps::ErrorKind;
using xaps::Registration;
using xaps::plugin::max_xapsd_file_size;
using xaps::plugin::parse_rfc3339_time;
using xaps::plugin::parse_xapsd_database;
using xaps::plugin::read_xapsd_database;
using xaps::plugin::XapsdDatabase;
using xaps::plugin::XapsdImportOptions;
using xaps::plugin::XapsdSkippedEntry;

namespace {

constexpr std::int64_t now = 1'800'000'000; // 2027-01-15T08:00:00Z
const std::string token = "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";

// A stand-in for Dovecot's imap_utf7_to_utf8: a few known names, '&'
// anywhere else is invalid.
std::optional<std::string> fake_utf7_decoder(const std::string &name) {
    static const std::map<std::string, std::string> known = {{"Entw&APw-rfe", "Entwürfe"}};
    if (auto it = known.find(name); it != known.end()) {
        return it->second;
    }
    if (name.find('&') != std::string::npos) {
        return std::nullopt;
    }
    return name;
}

// Registrations older than 30 days have expired.
constexpr std::int64_t expired_before = now - 30 * 86400;

XapsdImportOptions options() {
    return {now, expired_before, fake_utf7_decoder};
}

// One user with one account whose JSON members are `members`.
std::string one_account(const std::string &members, const std::string &user = "alice",
                        const std::string &account_id = "ACCOUNT-1") {
    return R"({"Users": {")" + user + R"(": {"Accounts": {")" + account_id + R"(": {)" + members +
           "}}}}}";
}

std::string token_member(const std::string &value = token) {
    return R"("DeviceToken": ")" + value + R"(")";
}

Registration expected(std::vector<std::string> mailboxes, std::int64_t time,
                      const std::string &user = "alice") {
    Registration reg;
    reg.user = user;
    reg.account_id = "ACCOUNT-1";
    reg.device_token = token;
    reg.subtopic = "com.apple.mobilemail";
    reg.aps_version = 2;
    reg.mailboxes = std::move(mailboxes);
    reg.registered_at = time;
    reg.last_seen = time;
    return reg;
}

TEST(XapsdImport, ReadsTheFileXapsdWrites) {
    // As Go's json.MarshalIndent writes a database.Database, times in local
    // time with nanoseconds.
    const std::string file = R"({
  "Users": {
    "alice": {
      "Accounts": {
        "0715A26B-CA09-4730-A419-793000CA982E": {
          "DeviceToken": "2A7E5E5B5D6E4A9C8E2B1F9D3C7A6B5E4D3C2B1A0F9E8D7C6B5A4F3E2D1C0B9A",
          "Mailboxes": [
            "INBOX",
            "Sent Messages"
          ],
          "RegistrationTime": "2027-01-10T10:15:30.123456789+01:00"
        }
      }
    },
    "bob": {
      "Accounts": {
        "B1": {
          "DeviceToken": "00ff",
          "Mailboxes": ["Inbox"],
          "RegistrationTime": "0001-01-01T00:00:00Z"
        },
        "B2": {
          "DeviceToken": "0a0b",
          "Mailboxes": ["INBOX", "Entw&APw-rfe"]
        }
      }
    }
  }
})";
    XapsdDatabase db = parse_xapsd_database(file, options());
    EXPECT_TRUE(db.skipped.empty());
    ASSERT_EQ(db.registrations.size(), 3u);

    const Registration &alice = db.registrations[0];
    EXPECT_EQ(alice.user, "alice");
    EXPECT_EQ(alice.account_id, "0715A26B-CA09-4730-A419-793000CA982E");
    EXPECT_EQ(alice.device_token, token) << "tokens are stored in lower case";
    EXPECT_EQ(alice.subtopic, "com.apple.mobilemail");
    EXPECT_EQ(alice.aps_version, 2u);
    EXPECT_EQ(alice.mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));
    EXPECT_EQ(alice.registered_at, 1'799'572'530); // 2027-01-10T09:15:30Z
    EXPECT_EQ(alice.last_seen, alice.registered_at);

    const Registration &b1 = db.registrations[1];
    EXPECT_EQ(b1.account_id, "B1");
    EXPECT_EQ(b1.mailboxes, std::vector<std::string>{"INBOX"});
    EXPECT_EQ(b1.registered_at, now) << "Go's zero time means unknown";

    const Registration &b2 = db.registrations[2];
    EXPECT_EQ(b2.mailboxes, (std::vector<std::string>{"INBOX", "Entwürfe"}));
    EXPECT_EQ(b2.registered_at, now) << "files of old xapsd versions have no time";
}

TEST(XapsdImport, EntriesAreCheckedOneByOne) {
    const std::string long_token(xaps::limits::max_device_token_length + 2, 'a');
    const std::string long_name(xaps::limits::max_mailbox_name_length + 1, 'x');
    std::string many_mailboxes = R"("Mailboxes": [)";
    for (std::size_t i = 0; i <= xaps::limits::max_mailboxes; i++) {
        many_mailboxes += (i ? ",\"m" : "\"m") + std::to_string(i) + "\"";
    }
    many_mailboxes += "]";

    struct Row {
        const char *name;
        std::string json;
        std::optional<Registration> registration; // nullopt: skipped
        std::string reason;
    };
    const std::vector<Row> rows = {
        {"minimal", one_account(token_member() + R"(, "Mailboxes": ["INBOX"])"),
         expected({"INBOX"}, now), ""},
        {"duplicate mailboxes collapse",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX", "inbox", "A", "A"])"),
         expected({"INBOX", "A"}, now), ""},
        {"invalid modified UTF-7 is kept as it is",
         one_account(token_member() + R"(, "Mailboxes": ["R&D"])"), expected({"R&D"}, now), ""},
        {"time with Z",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], )" +
                     R"("RegistrationTime": "2027-01-01T23:59:59Z")"),
         expected({"INBOX"}, 1'798'847'999), ""},
        {"time in the future is now",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], )" +
                     R"("RegistrationTime": "2099-01-01T00:00:00Z")"),
         expected({"INBOX"}, now), ""},
        {"time at the expiry bound",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], )" +
                     R"("RegistrationTime": "2026-12-16T08:00:00Z")"),
         expected({"INBOX"}, expired_before), ""},
        {"expired",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], )" +
                     R"("RegistrationTime": "2026-12-16T07:59:59Z")"),
         std::nullopt, "expired: last registered at 2026-12-16T07:59:59Z"},
        {"null time is now",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], "RegistrationTime": null)"),
         expected({"INBOX"}, now), ""},
        {"no token", one_account(R"("Mailboxes": ["INBOX"])"), std::nullopt,
         "DeviceToken is missing or not a string"},
        {"token not hex", one_account(token_member("xyz0") + R"(, "Mailboxes": ["INBOX"])"),
         std::nullopt, "DeviceToken is not an even number of hex digits (at most 200)"},
        {"token of odd length", one_account(token_member("abc") + R"(, "Mailboxes": ["INBOX"])"),
         std::nullopt, "DeviceToken is not an even number of hex digits (at most 200)"},
        {"token too long", one_account(token_member(long_token) + R"(, "Mailboxes": ["INBOX"])"),
         std::nullopt, "DeviceToken is not an even number of hex digits (at most 200)"},
        {"no mailboxes", one_account(token_member()), std::nullopt, "no mailboxes"},
        {"empty mailbox list", one_account(token_member() + R"(, "Mailboxes": [])"), std::nullopt,
         "no mailboxes"},
        {"mailboxes not a list", one_account(token_member() + R"(, "Mailboxes": "INBOX")"),
         std::nullopt, "Mailboxes is not a list"},
        {"mailbox not a string", one_account(token_member() + R"(, "Mailboxes": ["INBOX", 7])"),
         std::nullopt, "a mailbox name is not a string"},
        {"empty mailbox name", one_account(token_member() + R"(, "Mailboxes": [""])"), std::nullopt,
         "a mailbox name is empty"},
        {"mailbox name with a control character",
         one_account(token_member() + R"(, "Mailboxes": ["a\tb"])"), std::nullopt,
         "a mailbox name contains control characters"},
        {"mailbox name too long",
         one_account(token_member() + R"(, "Mailboxes": [")" + long_name + R"("])"), std::nullopt,
         "a mailbox name is longer than 1024 bytes"},
        {"too many mailboxes", one_account(token_member() + ", " + many_mailboxes), std::nullopt,
         "more than 1000 mailboxes"},
        {"time not a string",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], "RegistrationTime": 5)"),
         std::nullopt, "RegistrationTime is not a string"},
        {"time not RFC 3339",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"], "RegistrationTime": "today")"),
         std::nullopt, "RegistrationTime is not an RFC 3339 time"},
        {"account not an object", R"({"Users": {"alice": {"Accounts": {"ACCOUNT-1": []}}}})",
         std::nullopt, "the account is not an object"},
        {"empty account id",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"])", "alice", ""), std::nullopt,
         "the account id is empty"},
        {"account id not UTF-8",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"])", "alice", "acc\xff"),
         std::nullopt, "the account id is not valid UTF-8"},
        {"account id with a control character",
         one_account(token_member() + R"(, "Mailboxes": ["INBOX"])", "alice", "a\\tb"),
         std::nullopt, "the account id contains control characters"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        XapsdDatabase db = parse_xapsd_database(row.json, options());
        if (row.registration) {
            ASSERT_EQ(db.registrations.size(), 1u);
            EXPECT_EQ(db.registrations[0], *row.registration);
            EXPECT_TRUE(db.skipped.empty());
        } else {
            EXPECT_TRUE(db.registrations.empty());
            ASSERT_EQ(db.skipped.size(), 1u);
            EXPECT_EQ(db.skipped[0].user, "alice");
            EXPECT_EQ(db.skipped[0].reason, row.reason);
        }
    }
}

TEST(XapsdImport, ABadEntryDoesNotSpoilTheOthers) {
    const std::string file = R"({"Users": {
        "alice": {"Accounts": {"A1": {"DeviceToken": "zz", "Mailboxes": ["INBOX"]},
                               "A2": {"DeviceToken": "0a", "Mailboxes": ["INBOX"]}}},
        "bob": {"Accounts": "none"},
        "carol": {"Accounts": null},
        "dave": 3,
        "": {"Accounts": {"A3": {"DeviceToken": "0a", "Mailboxes": ["INBOX"]}}}}})";
    XapsdDatabase db = parse_xapsd_database(file, options());
    ASSERT_EQ(db.registrations.size(), 1u);
    EXPECT_EQ(db.registrations[0].account_id, "A2");
    const std::vector<XapsdSkippedEntry> expected_skips = {
        {"", "", "the user name is empty"},
        {"alice", "A1", "DeviceToken is not an even number of hex digits (at most 200)"},
        {"bob", "", "Accounts is not an object"},
        {"dave", "", "the user is not an object"},
    };
    EXPECT_EQ(db.skipped, expected_skips);
}

TEST(XapsdImport, RefusesWhatIsNoXapsdDatabase) {
    const std::vector<std::pair<const char *, std::string>> rows = {
        {"empty", ""},
        {"not JSON", "Users: alice"},
        {"truncated", R"({"Users": {"alice": {)"},
        {"trailing garbage", R"({"Users": {}} {})"},
        {"a list", "[]"},
        {"no Users", R"({"users": {}})"},
        {"Users not an object", R"({"Users": []})"},
        {"duplicate keys", R"({"Users": {}, "Users": {}})"},
    };
    for (const auto &[name, json] : rows) {
        SCOPED_TRACE(name);
        try {
            parse_xapsd_database(json, options());
            ADD_FAILURE() << "accepted";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
        }
    }
    EXPECT_TRUE(parse_xapsd_database(R"({"Users": null})", options()).registrations.empty());
    EXPECT_TRUE(parse_xapsd_database(R"({"Users": {}})", options()).registrations.empty());
}

TEST(XapsdImport, ParsesGoTimes) {
    const std::vector<std::pair<std::string, std::optional<std::int64_t>>> rows = {
        {"1970-01-01T00:00:00Z", 0},
        {"2018-09-22T12:42:31Z", 1'537'620'151},
        {"2018-09-22T12:42:31.5Z", 1'537'620'151},
        {"2018-09-22T14:42:31.999999999+02:00", 1'537'620'151},
        {"2018-09-22T07:12:31-05:30", 1'537'620'151},
        {"2018-09-22t12:42:31z", 1'537'620'151},
        {"0001-01-01T00:00:00Z", -62'135'596'800},
        {"2018-09-22T12:42:31", std::nullopt},
        {"2018-09-22 12:42:31Z", std::nullopt},
        {"2018-02-30T12:42:31Z", std::nullopt},
        {"2018-09-22T24:00:00Z", std::nullopt},
        {"2018-09-22T12:42:31.Z", std::nullopt},
        {"2018-09-22T12:42:31+0200", std::nullopt},
        {"2018-09-22T12:42:31Zjunk", std::nullopt},
        {"18-09-22T12:42:31Z", std::nullopt},
        {"", std::nullopt},
    };
    for (const auto &[text, seconds] : rows) {
        SCOPED_TRACE(text);
        EXPECT_EQ(parse_rfc3339_time(text), seconds);
    }
}

class TemporaryFile {
public:
    TemporaryFile() {
        char name[] = "/tmp/test-xapsd-import-XXXXXX";
        int fd = ::mkstemp(name);
        if (fd < 0) {
            throw std::runtime_error("mkstemp failed");
        }
        ::close(fd);
        path_ = name;
    }
    ~TemporaryFile() { std::remove(path_.c_str()); }
    const std::string &path() const { return path_; }

private:
    std::string path_;
};

TEST(XapsdImport, ReadsFilesWithinTheLimit) {
    TemporaryFile file;
    {
        std::ofstream out(file.path(), std::ios::binary);
        out << one_account(token_member() + R"(, "Mailboxes": ["INBOX"])");
    }
    EXPECT_EQ(read_xapsd_database(file.path(), options()).registrations.size(), 1u);

    {
        // Valid JSON padded with spaces beyond the limit: refused unparsed.
        std::ofstream out(file.path(), std::ios::binary | std::ios::trunc);
        out << R"({"Users": {}})" << std::string(max_xapsd_file_size, ' ');
    }
    try {
        read_xapsd_database(file.path(), options());
        ADD_FAILURE() << "a file over the limit was accepted";
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
        EXPECT_NE(std::string(e.what()).find("larger than 64 MiB"), std::string::npos) << e.what();
    }

    try {
        read_xapsd_database(file.path() + ".missing", options());
        ADD_FAILURE() << "a missing file was read";
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
    }
}

} // namespace
