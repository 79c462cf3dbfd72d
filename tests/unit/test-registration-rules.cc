#include "registration-rules.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace xaps {
namespace {

using Problem = RuleBreach::Problem;

// One row of a field's table: the input, and either the stored value or the
// breach.
struct Row {
    std::string name;
    std::string input;
    std::optional<std::string> stored; // nullopt: refused
    Problem problem = Problem::missing;
    std::string reason;
};

void expect(const Checked<std::string> &checked, const Row &row) {
    if (row.stored) {
        ASSERT_TRUE(std::holds_alternative<std::string>(checked))
            << std::get<RuleBreach>(checked).reason;
        EXPECT_EQ(std::get<std::string>(checked), *row.stored);
    } else {
        ASSERT_TRUE(std::holds_alternative<RuleBreach>(checked));
        EXPECT_EQ(std::get<RuleBreach>(checked), (RuleBreach{row.problem, row.reason}));
    }
}

Row accepted(std::string name, std::string input, std::string stored) {
    return {std::move(name), std::move(input), std::move(stored), Problem::missing, {}};
}
Row refused(std::string name, std::string input, Problem problem, std::string reason) {
    return {std::move(name), std::move(input), std::nullopt, problem, std::move(reason)};
}

TEST(RegistrationRules, DeviceToken) {
    const Row rows[] = {
        accepted("lower-case hex", "0a1b2c", "0a1b2c"),
        accepted("iOS sends upper case", "2918ABCDEF", "2918abcdef"),
        accepted("longest", std::string(200, 'F'), std::string(200, 'f')),
        refused("empty", "", Problem::missing, "Missing aps-device-token."),
        refused("one digit too many", std::string(201, 'a'), Problem::too_long,
                "aps-device-token is too long."),
        refused("too long is told before not hex", std::string(202, 'z'), Problem::too_long,
                "aps-device-token is too long."),
        refused("not hex", "abcg", Problem::not_hex, "aps-device-token must be hexadecimal."),
        refused("a NUL", std::string("ab\0d", 4), Problem::not_hex,
                "aps-device-token must be hexadecimal."),
        refused("a space", "ab cd", Problem::not_hex, "aps-device-token must be hexadecimal."),
        refused("odd length", "abc", Problem::odd_length,
                "aps-device-token must have an even number of hex digits."),
        refused("not hex is told before odd length", "xyz", Problem::not_hex,
                "aps-device-token must be hexadecimal."),
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        expect(check_device_token(row.input), row);
    }
}

TEST(RegistrationRules, AccountId) {
    const Row rows[] = {
        accepted("iOS account id", "0715A26B-CA09-4730-A419-793000CA982E",
                 "0715A26B-CA09-4730-A419-793000CA982E"),
        accepted("JSON and IMAP specials and UTF-8 kept as they are",
                 "q\"b}s\\k] M\xc3\xbcller \xf0\x9f\x93\xa7",
                 "q\"b}s\\k] M\xc3\xbcller \xf0\x9f\x93\xa7"),
        accepted("longest", std::string(128, 'a'), std::string(128, 'a')),
        refused("empty", "", Problem::missing, "Missing aps-account-id."),
        refused("too long", std::string(129, 'a'), Problem::too_long,
                "aps-account-id is too long."),
        refused("a tab", "a\tb", Problem::control_character,
                "aps-account-id contains control characters."),
        refused("DEL", "a\x7f", Problem::control_character,
                "aps-account-id contains control characters."),
        refused("control character is told before UTF-8", "a\n\xff", Problem::control_character,
                "aps-account-id contains control characters."),
        refused("not UTF-8", "acc\xff\xfe", Problem::not_utf8,
                "aps-account-id is not valid UTF-8."),
        refused("truncated UTF-8", "M\xc3", Problem::not_utf8,
                "aps-account-id is not valid UTF-8."),
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        expect(check_account_id(row.input), row);
    }
}

TEST(RegistrationRules, User) {
    const Row rows[] = {
        accepted("kept as it is, case included", "Alice@Example.org", "Alice@Example.org"),
        accepted("longest", std::string(160, 'u'), std::string(160, 'u')),
        refused("empty", "", Problem::missing, "Missing user name."),
        refused("too long", std::string(161, 'u'), Problem::too_long, "User name is too long."),
        refused("a tab", "al\tice", Problem::control_character,
                "User name contains control characters."),
        refused("too long is told before a control character", std::string(161, '\n'),
                Problem::too_long, "User name is too long."),
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        expect(check_user(row.input), row);
    }
}

TEST(RegistrationRules, MailboxName) {
    const Row rows[] = {
        accepted("a name", "Sent Messages", "Sent Messages"),
        accepted("INBOX", "INBOX", "INBOX"),
        accepted("INBOX in any case", "iNbOx", "INBOX"),
        accepted("INBOX's children keep their case", "inbox/Sub", "inbox/Sub"),
        accepted("UTF-8", "Entw\xc3\xbcrfe", "Entw\xc3\xbcrfe"),
        accepted("longest", std::string(1024, 'n'), std::string(1024, 'n')),
        refused("empty", "", Problem::missing, "Empty mailbox name."),
        refused("too long", std::string(1025, 'n'), Problem::too_long, "Mailbox name is too long."),
        refused("a line break", "a\r\nb", Problem::control_character,
                "Mailbox name contains control characters."),
        refused("too long is told before a control character", std::string(1025, '\t'),
                Problem::too_long, "Mailbox name is too long."),
        // What "&AAE-", "&AB8-", "&AH8-" and "&AIU-" decode to.
        refused("U+0001", "\x01", Problem::control_character,
                "Mailbox name contains control characters."),
        refused("U+001F", "a\x1f", Problem::control_character,
                "Mailbox name contains control characters."),
        refused("DEL", "\x7f", Problem::control_character,
                "Mailbox name contains control characters."),
        refused("C1 NEL U+0085", "x\xc2\x85z", Problem::control_character,
                "Mailbox name contains control characters."),
        refused("C1 CSI U+009B", "\xc2\x9bK", Problem::control_character,
                "Mailbox name contains control characters."),
        accepted("U+00A0 is not a control character", "x\xc2\xa0z", "x\xc2\xa0z"),
        refused("not UTF-8", "Entw\xfcrfe", Problem::not_utf8, "Mailbox name is not valid UTF-8."),
        refused("a raw C1 byte is not UTF-8", "\x9bK", Problem::not_utf8,
                "Mailbox name is not valid UTF-8."),
        refused("C0 control character is told before UTF-8", "\x01\xff", Problem::control_character,
                "Mailbox name contains control characters."),
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        expect(check_mailbox_name(row.input), row);
    }
}

TEST(RegistrationRules, Subtopic) {
    const std::vector<std::string> accepted_subtopics = {"com.apple.mobilemail",
                                                         "com.example.other"};
    const Row rows[] = {
        accepted("the iOS Mail subtopic", "com.apple.mobilemail", "com.apple.mobilemail"),
        accepted("another configured one", "com.example.other", "com.example.other"),
        refused("empty", "", Problem::missing, "Missing aps-subtopic."),
        refused("not configured", "com.apple.mobilecal", Problem::not_accepted,
                "Unsupported aps-subtopic."),
        refused("compared exactly", "COM.APPLE.MOBILEMAIL", Problem::not_accepted,
                "Unsupported aps-subtopic."),
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        expect(check_subtopic(row.input, accepted_subtopics), row);
    }
}

TEST(RegistrationRules, ApsVersion) {
    struct VersionRow {
        std::string text;
        std::optional<unsigned> version; // nullopt: refused
    };
    const VersionRow rows[] = {
        {"1", 1},
        {"2", 2},
        {"3", std::nullopt},
        {"0", std::nullopt},
        {"", std::nullopt},
        {" 2", std::nullopt},
        {"02", std::nullopt},
        {"2.0", std::nullopt},
    };
    for (const VersionRow &row : rows) {
        SCOPED_TRACE(row.text);
        Checked<unsigned> checked = check_aps_version(row.text);
        if (row.version) {
            ASSERT_TRUE(std::holds_alternative<unsigned>(checked));
            EXPECT_EQ(std::get<unsigned>(checked), *row.version);
        } else {
            ASSERT_TRUE(std::holds_alternative<RuleBreach>(checked));
            EXPECT_EQ(std::get<RuleBreach>(checked),
                      (RuleBreach{Problem::not_accepted, "Unsupported aps-version."}));
        }
    }

    const std::pair<unsigned, bool> numbers[] = {{0, false}, {1, true}, {2, true}, {3, false}};
    for (const auto &[number, valid] : numbers) {
        SCOPED_TRACE(number);
        EXPECT_EQ(std::holds_alternative<unsigned>(check_aps_version(number)), valid);
    }
}

TEST(RegistrationRules, MailboxCount) {
    const std::pair<std::size_t, bool> rows[] = {{0, true}, {1000, true}, {1001, false}};
    for (const auto &[count, valid] : rows) {
        SCOPED_TRACE(count);
        std::optional<RuleBreach> breach = check_mailbox_count(count);
        if (valid) {
            EXPECT_FALSE(breach);
        } else {
            EXPECT_EQ(breach, (RuleBreach{Problem::too_many, "Too many mailboxes."}));
        }
    }
}

TEST(RegistrationRules, CanonicalMailboxName) {
    const std::pair<std::string, std::string> rows[] = {
        {"INBOX", "INBOX"},
        {"inbox", "INBOX"},
        {"Inbox", "INBOX"},
        {"INBOX.", "INBOX."},
        {"INBOX/Sub", "INBOX/Sub"},
        {"Notes", "Notes"},
        {"INB\xc3\x96X", "INB\xc3\x96X"},
    };
    for (const auto &[name, canonical] : rows) {
        SCOPED_TRACE(name);
        EXPECT_EQ(canonical_mailbox_name(name), canonical);
    }
}

TEST(RegistrationRules, AsciiCaseFolding) {
    const std::pair<std::string, std::string> lower[] = {
        {"", ""},
        {"ABCDEF0123", "abcdef0123"},
        {"Alice@Example.ORG", "alice@example.org"},
        // Only A-Z: other bytes, UTF-8 included, are left as they are.
        {"[@`{] \xc3\x9c", "[@`{] \xc3\x9c"},
    };
    for (const auto &[text, lowered] : lower) {
        SCOPED_TRACE(text);
        EXPECT_EQ(lower_ascii(text), lowered);
    }

    struct EqualsRow {
        std::string a;
        std::string b;
        bool equal;
    };
    const EqualsRow equals[] = {
        {"aps-version", "APS-VERSION", true},
        {"Aps-Subtopic", "aps-subtopic", true},
        {"", "", true},
        {"inbox", "inbox ", false},
        {"@", "`", false}, // one apart from 'A' and 'a', not letters
        {"\xc3\x9c", "\xc3\xbc", false},
    };
    for (const EqualsRow &row : equals) {
        SCOPED_TRACE(row.a + " / " + row.b);
        EXPECT_EQ(equals_ignoring_ascii_case(row.a, row.b), row.equal);
    }
}

TEST(RegistrationRules, Utf8) {
    const std::pair<std::string, bool> rows[] = {
        {"", true},
        {"0715A26B-CA09-4730-A419-793000CA982E", true},
        {"Entw\xc3\xbcrfe", true},   // ü
        {"\xe2\x82\xac", true},      // €
        {"\xf0\x9f\x93\xa7", true},  // U+1F4E7
        {"\xc3", false},             // truncated
        {"\xc0\xaf", false},         // overlong '/'
        {"\xe0\x80\xaf", false},     // overlong
        {"\xed\xa0\x80", false},     // surrogate U+D800
        {"\xf4\x90\x80\x80", false}, // past U+10FFFF
        {"\xff", false},             // never valid
        {"a\x80"
         "b",
         false}, // lone continuation byte
    };
    for (const auto &[text, valid] : rows) {
        SCOPED_TRACE(text);
        EXPECT_EQ(is_valid_utf8(text), valid);
    }
}

TEST(RegistrationRules, ControlCharacters) {
    const std::pair<std::string, bool> rows[] = {
        {"plain text \xc3\xbc", false},
        {"line\nbreak", true},
        {std::string("nul\0", 4), true},
        {"del\x7f", true},
        {"tab\t", true},
        {"unit separator\x1f", true},
        {"space and tilde ~", false},
    };
    for (const auto &[text, has_control] : rows) {
        SCOPED_TRACE(text);
        EXPECT_EQ(has_control_character(text), has_control);
    }
}

TEST(RegistrationRules, C1ControlCharacters) {
    const std::pair<std::string, bool> rows[] = {
        {"", false},
        {"plain text", false},
        {"\xc2\x80", true},      // U+0080
        {"x\xc2\x9fz", true},    // U+009F
        {"\xc2\xa0", false},     // U+00A0, no-break space
        {"\xc3\x85", false},     // U+00C5
        {"\xc2", false},         // truncated: not UTF-8, not a C1 character
        {"\x85", false},         // a lone byte: not UTF-8, not a C1 character
        {"\xe2\x82\xac", false}, // U+20AC
        {"\xf0\x9f\x93\xa7", false},
    };
    for (const auto &[text, has_c1] : rows) {
        SCOPED_TRACE(text);
        EXPECT_EQ(has_c1_control_character(text), has_c1);
    }
}

} // namespace
} // namespace xaps
