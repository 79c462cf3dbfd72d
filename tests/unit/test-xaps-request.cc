#include "xaps-request.h"

#include "registration.h"

#include <gtest/gtest.h>

#include <map>

using xaps::plugin::ApsRequest;
using xaps::plugin::parse_aps_request;
using xaps::plugin::Rejection;
using xaps::plugin::RequestArg;
using xaps::plugin::RequestError;
using xaps::plugin::RequestMailbox;
using xaps::plugin::RequestPolicy;

namespace {

using Args = std::vector<RequestArg>;

RequestArg s(std::string text) {
    return RequestArg::string(std::move(text));
}
RequestArg list(Args items) {
    return RequestArg::list(std::move(items));
}
RequestArg nil() {
    return RequestArg::nil();
}

const std::string account = "0715A26B-CA09-4730-A419-793000CA982E";
// iOS sends upper-case hex; it is stored lower-case.
const std::string token_upper = "2918390218931890821908309283098109381029309829018310983092892ABC";
const std::string token_lower = "2918390218931890821908309283098109381029309829018310983092892abc";
const std::string subtopic = "com.apple.mobilemail";

// A stand-in for Dovecot's imap_utf7_to_utf8: a few known names, and '&'
// anywhere else is invalid.
std::optional<std::string> fake_utf7_decoder(const std::string &name) {
    static const std::map<std::string, std::string> known = {
        {"Entw&APw-rfe", "Entwürfe"},
        {"&ZeVnLIqe-", "日本語"},
        // Dovecot's decoder turns these into control characters.
        {"&AAE-", "\x01"},
        {"x&AB8-z", "x\x1fz"},
        {"&AH8-", "\x7f"},
        {"&AIU-", "\xc2\x85"},
        // A long run of CJK grows when decoded: 3 UTF-8 bytes for 8/3 letters.
        {"&" + std::string(1020, 'Z') + "-", std::string(1150, 'x')},
    };
    if (auto it = known.find(name); it != known.end()) {
        return it->second;
    }
    if (name.find('&') != std::string::npos) {
        return std::nullopt;
    }
    return name;
}

RequestPolicy policy() {
    return {{subtopic, "com.example.other"}, fake_utf7_decoder};
}

// The request iOS Mail sends, with the given mailbox list.
Args ios_request(Args mailboxes) {
    return {s("aps-version"),      s("2"),
            s("aps-account-id"),   s(account),
            s("aps-device-token"), s(token_upper),
            s("aps-subtopic"),     s(subtopic),
            s("mailboxes"),        list(std::move(mailboxes))};
}

// The iOS request with one pair's value replaced (or the pair dropped).
Args with_value(const std::string &key, std::optional<RequestArg> value) {
    Args args = ios_request({s("INBOX")});
    for (std::size_t i = 0; i < args.size(); i += 2) {
        if (args[i].text == key) {
            if (value) {
                args[i + 1] = *value;
            } else {
                args.erase(args.begin() + static_cast<std::ptrdiff_t>(i),
                           args.begin() + static_cast<std::ptrdiff_t>(i) + 2);
            }
            return args;
        }
    }
    ADD_FAILURE() << "no key " << key;
    return args;
}

ApsRequest expected(unsigned version, std::vector<RequestMailbox> mailboxes) {
    return {version, account, token_lower, subtopic, std::move(mailboxes)};
}

const RequestMailbox inbox{"INBOX", "INBOX"};

struct AcceptCase {
    std::string name;
    Args args;
    ApsRequest want;
};

TEST(XapsRequest, AcceptsRealRequestShapes) {
    Args with_sender = ios_request({s("INBOX")});
    with_sender.insert(with_sender.begin() + 4, {s("sender"), s("aps-sender-value")});
    Args shuffled_upper_case = {s("MAILBOXES"),        list({s("INBOX")}),
                                s("Aps-Subtopic"),     s(subtopic),
                                s("APS-DEVICE-TOKEN"), s(token_upper),
                                s("aps-account-id"),   s(account),
                                s("APS-VERSION"),      s("2")};
    Args unknown_pairs_of_any_kind = ios_request({s("INBOX")});
    unknown_pairs_of_any_kind.insert(unknown_pairs_of_any_kind.end(),
                                     {s("x-list"), list({nil(), list({})}), s("x-nil"), nil()});
    Args version1 = {s("aps-version"),      s("1"),         s("aps-account-id"), s(account),
                     s("aps-device-token"), s(token_upper), s("aps-subtopic"),   s(subtopic)};
    Args version1_ignores_list = version1;
    version1_ignores_list.insert(version1_ignores_list.end(), {s("mailboxes"), list({s("Notes")})});
    Args version1_ignores_control = version1;
    version1_ignores_control.insert(version1_ignores_control.end(),
                                    {s("mailboxes"), list({s("&AAE-")})});
    std::string longest_token(xaps::limits::max_device_token_length, 'f');
    Args many_mailboxes_list;
    std::vector<RequestMailbox> many_mailboxes;
    for (std::size_t i = 0; i < xaps::limits::max_mailboxes; i++) {
        std::string name = "box" + std::to_string(i);
        many_mailboxes_list.push_back(s(name));
        many_mailboxes.push_back({name, name});
    }
    std::string longest_name(xaps::limits::max_mailbox_name_length, 'n');
    // Opaque to us: it reaches Apple inside a JSON string.
    const std::string unusual_account = "q\"b}s\\k] M\xc3\xbcller \xf0\x9f\x93\xa7";

    const AcceptCase cases[] = {
        {"iOS request", ios_request({s("INBOX"), s("Sent Messages"), s("Notes")}),
         expected(2, {inbox, {"Sent Messages", "Sent Messages"}, {"Notes", "Notes"}})},
        {"newer iOS adds a sender pair", with_sender, expected(2, {inbox})},
        {"keys in any order and case", shuffled_upper_case, expected(2, {inbox})},
        {"unknown pairs with list and NIL values", unknown_pairs_of_any_kind, expected(2, {inbox})},
        {"modified UTF-7 names are decoded", ios_request({s("Entw&APw-rfe"), s("&ZeVnLIqe-")}),
         expected(2, {{"Entw&APw-rfe", "Entwürfe"}, {"&ZeVnLIqe-", "日本語"}})},
        {"duplicates collapse, first spelling kept",
         ios_request({s("inbox"), s("Notes"), s("INBOX"), s("Notes"), s("Inbox")}),
         expected(2, {{"inbox", "INBOX"}, {"Notes", "Notes"}})},
        {"INBOX children keep their case", ios_request({s("inbox/Sub"), s("INBOX/Sub")}),
         expected(2, {{"inbox/Sub", "inbox/Sub"}, {"INBOX/Sub", "INBOX/Sub"}})},
        {"version 2 without mailboxes means INBOX", with_value("mailboxes", std::nullopt),
         expected(2, {inbox})},
        {"version 2 with an empty list means no mailbox", ios_request({}), expected(2, {})},
        {"version 1 is INBOX only", version1, expected(1, {inbox})},
        {"version 1 ignores a mailbox list", version1_ignores_list, expected(1, {inbox})},
        {"version 1 ignores what the list's names decode to", version1_ignores_control,
         expected(1, {inbox})},
        {"atoms are strings too", with_value("aps-version", s("2")), expected(2, {inbox})},
        {"longest device token",
         with_value("aps-device-token", s(longest_token)),
         {2, account, longest_token, subtopic, {inbox}}},
        {"most mailboxes", ios_request(many_mailboxes_list), expected(2, many_mailboxes)},
        {"longest mailbox name", ios_request({s(longest_name)}),
         expected(2, {{longest_name, longest_name}})},
        {"account id with JSON and IMAP specials and UTF-8",
         with_value("aps-account-id", s(unusual_account)),
         {2, unusual_account, token_lower, subtopic, {inbox}}},
        {"another configured subtopic",
         with_value("aps-subtopic", s("com.example.other")),
         {2, account, token_lower, "com.example.other", {inbox}}},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.name);
        auto parsed = parse_aps_request(c.args, policy());
        ASSERT_TRUE(std::holds_alternative<ApsRequest>(parsed))
            << std::get<RequestError>(parsed).message;
        EXPECT_EQ(std::get<ApsRequest>(parsed), c.want);
    }
}

struct RejectCase {
    std::string name;
    Args args;
    Rejection want;
    std::string message_part;
};

TEST(XapsRequest, RejectsEveryBadInputClass) {
    Args odd = ios_request({s("INBOX")});
    odd.push_back(s("sender"));
    Args duplicate_key = ios_request({s("INBOX")});
    duplicate_key.insert(duplicate_key.end(), {s("APS-VERSION"), s("2")});
    Args too_many_mailboxes;
    for (std::size_t i = 0; i <= xaps::limits::max_mailboxes; i++) {
        too_many_mailboxes.push_back(s("box" + std::to_string(i)));
    }

    const RejectCase cases[] = {
        // Syntax: BAD.
        {"odd number of items", odd, Rejection::bad, "pairs"},
        {"no arguments but one", {s("aps-version")}, Rejection::bad, "pairs"},
        {"NIL key", {nil(), s("2")}, Rejection::bad, "keys"},
        {"list key", {list({s("a")}), s("2")}, Rejection::bad, "keys"},
        {"version is a list", with_value("aps-version", list({s("2")})), Rejection::bad,
         "aps-version"},
        {"token is NIL", with_value("aps-device-token", nil()), Rejection::bad, "aps-device-token"},
        {"account id is a list", with_value("aps-account-id", list({})), Rejection::bad,
         "aps-account-id"},
        {"subtopic is NIL", with_value("aps-subtopic", nil()), Rejection::bad, "aps-subtopic"},
        {"mailboxes is a string", with_value("mailboxes", s("INBOX")), Rejection::bad, "list"},
        {"mailboxes is NIL", with_value("mailboxes", nil()), Rejection::bad, "list"},
        {"mailbox name is NIL", ios_request({s("INBOX"), nil()}), Rejection::bad, "strings"},
        {"mailbox name is a list", ios_request({list({s("INBOX")})}), Rejection::bad, "strings"},
        {"key given twice", duplicate_key, Rejection::bad, "more than once"},
        // Well-formed but refused: NO.
        {"no arguments", {}, Rejection::no, "aps-version"},
        {"missing version", with_value("aps-version", std::nullopt), Rejection::no, "aps-version"},
        {"version 3", with_value("aps-version", s("3")), Rejection::no, "aps-version"},
        {"version with spaces", with_value("aps-version", s(" 2")), Rejection::no, "aps-version"},
        {"empty version", with_value("aps-version", s("")), Rejection::no, "aps-version"},
        {"missing account id", with_value("aps-account-id", std::nullopt), Rejection::no,
         "aps-account-id"},
        {"empty account id", with_value("aps-account-id", s("")), Rejection::no, "aps-account-id"},
        {"account id too long",
         with_value("aps-account-id", s(std::string(xaps::limits::max_account_id_length + 1, 'a'))),
         Rejection::no, "too long"},
        {"account id with a control character", with_value("aps-account-id", s("a\tb")),
         Rejection::no, "aps-account-id"},
        {"account id not UTF-8", with_value("aps-account-id", s("acc\xff\xfe")), Rejection::no,
         "UTF-8"},
        {"account id truncated UTF-8", with_value("aps-account-id", s("M\xc3")), Rejection::no,
         "UTF-8"},
        {"account id overlong UTF-8", with_value("aps-account-id", s("\xc0\xaf")), Rejection::no,
         "UTF-8"},
        {"account id UTF-8 surrogate", with_value("aps-account-id", s("\xed\xa0\x80")),
         Rejection::no, "UTF-8"},
        {"account id past U+10FFFF", with_value("aps-account-id", s("\xf4\x90\x80\x80")),
         Rejection::no, "UTF-8"},
        {"missing token", with_value("aps-device-token", std::nullopt), Rejection::no,
         "aps-device-token"},
        {"empty token", with_value("aps-device-token", s("")), Rejection::no, "aps-device-token"},
        {"token not hex", with_value("aps-device-token", s("abcg")), Rejection::no, "hexadecimal"},
        {"token with a NUL", with_value("aps-device-token", s(std::string("ab\0d", 4))),
         Rejection::no, "hexadecimal"},
        {"token of odd length", with_value("aps-device-token", s("abc")), Rejection::no, "even"},
        {"token too long",
         with_value("aps-device-token",
                    s(std::string(xaps::limits::max_device_token_length + 2, 'a'))),
         Rejection::no, "too long"},
        {"missing subtopic", with_value("aps-subtopic", std::nullopt), Rejection::no,
         "aps-subtopic"},
        {"unconfigured subtopic", with_value("aps-subtopic", s("com.apple.mobilecal")),
         Rejection::no, "aps-subtopic"},
        {"subtopic differs in case", with_value("aps-subtopic", s("COM.APPLE.MOBILEMAIL")),
         Rejection::no, "aps-subtopic"},
        {"too many mailboxes", ios_request(too_many_mailboxes), Rejection::no, "Too many"},
        {"empty mailbox name", ios_request({s("INBOX"), s("")}), Rejection::no, "Empty"},
        {"mailbox name too long",
         ios_request({s(std::string(xaps::limits::max_mailbox_name_length + 1, 'n'))}),
         Rejection::no, "too long"},
        {"mailbox name not modified UTF-7", ios_request({s("Entw&APw")}), Rejection::no, "UTF-7"},
        {"mailbox name with a line break", ios_request({s("a\r\nb")}), Rejection::no, "control"},
        {"mailbox name decoding to U+0001", ios_request({s("INBOX"), s("&AAE-")}), Rejection::no,
         "control"},
        {"mailbox name decoding to U+001F", ios_request({s("x&AB8-z")}), Rejection::no, "control"},
        {"mailbox name decoding to DEL", ios_request({s("&AH8-")}), Rejection::no, "control"},
        {"mailbox name decoding to the C1 control U+0085", ios_request({s("&AIU-")}), Rejection::no,
         "control"},
        {"mailbox name too long once decoded", ios_request({s("&" + std::string(1020, 'Z') + "-")}),
         Rejection::no, "too long"},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.name);
        auto parsed = parse_aps_request(c.args, policy());
        ASSERT_TRUE(std::holds_alternative<RequestError>(parsed));
        const auto &error = std::get<RequestError>(parsed);
        EXPECT_EQ(error.rejection, c.want) << error.message;
        EXPECT_NE(error.message.find(c.message_part), std::string::npos) << error.message;
        // Messages go into a tagged reply line.
        EXPECT_EQ(error.message.find_first_of("\r\n"), std::string::npos);
    }
}

TEST(XapsRequest, SyntaxIsCheckedBeforeValues) {
    // A bad version and a malformed mailbox list: the syntax error wins.
    Args args = with_value("aps-version", s("9"));
    args.back() = s("INBOX");
    auto parsed = parse_aps_request(args, policy());
    ASSERT_TRUE(std::holds_alternative<RequestError>(parsed));
    EXPECT_EQ(std::get<RequestError>(parsed).rejection, Rejection::bad);
}

TEST(XapsRequest, WithoutDecoderNamesAreTakenAsSent) {
    RequestPolicy plain{{subtopic}, {}};
    auto parsed = parse_aps_request(ios_request({s("Entw&APw-rfe")}), plain);
    ASSERT_TRUE(std::holds_alternative<ApsRequest>(parsed));
    EXPECT_EQ(std::get<ApsRequest>(parsed).mailboxes,
              (std::vector<RequestMailbox>{{"Entw&APw-rfe", "Entw&APw-rfe"}}));
}

} // namespace
