#include "printable-text.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace xaps {
namespace {

TEST(PrintableText, EscapesWhatATerminalWouldObey) {
    const std::pair<std::string, std::string> rows[] = {
        {"", ""},
        {"alice@example.org", "alice@example.org"},
        {"Sent, old", "Sent, old"},
        // Backslashes and quotes stay: only the list form quotes.
        {R"(DOMAIN\alice "x")", R"(DOMAIN\alice "x")"},
        {"Entw\xc3\xbcrfe \xe6\x97\xa5 \xf0\x9f\x93\xa7",
         "Entw\xc3\xbcrfe \xe6\x97\xa5 \xf0\x9f\x93\xa7"},
        {"a\tb", R"(a\x09b)"},
        {"line\r\nbreak", R"(line\x0d\x0abreak)"},
        {std::string("nul\0!", 5), R"(nul\x00!)"},
        {"\x1b]0;title\x07", R"(\x1b]0;title\x07)"},
        {"del\x7f", R"(del\x7f)"},
        // U+0085 and U+009B (CSI) as UTF-8: both bytes.
        {"x\xc2\x85z", R"(x\xc2\x85z)"},
        {"\xc2\x9b"
         "2J",
         R"(\xc2\x9b2J)"},
        // U+00A0 is printable.
        {"x\xc2\xa0z", "x\xc2\xa0z"},
        // Not UTF-8: every stray byte.
        {"\x9b"
         "2J",
         R"(\x9b2J)"},
        {"Entw\xfcrfe", R"(Entw\xfcrfe)"},
        {"M\xc3", R"(M\xc3)"},
        {"\xc0\xaf", R"(\xc0\xaf)"},
        {"\xed\xa0\x80!", R"(\xed\xa0\x80!)"},
        {"\xe6\x97", R"(\xe6\x97)"},
    };
    for (const auto &[text, printed] : rows) {
        SCOPED_TRACE(printed);
        EXPECT_EQ(printable_text(text), printed);
    }
}

TEST(PrintableText, ListOfQuotedStrings) {
    const std::pair<std::vector<std::string>, std::string> rows[] = {
        {{}, "()"},
        {{"INBOX"}, R"-(("INBOX"))-"},
        {{"INBOX", "Sent Messages"}, R"-(("INBOX" "Sent Messages"))-"},
        {{"INBOX", "Sent, old", "a\"b"}, R"-(("INBOX" "Sent, old" "a\"b"))-"},
        {{R"(back\slash)", R"(\")"}, R"-(("back\\slash" "\\\""))-"},
        {{"(", ")", "\" \""}, R"-(("(" ")" "\" \""))-"},
        {{"Entw\xc3\xbcrfe"}, "(\"Entw\xc3\xbcrfe\")"},
        {{"a\x01", "b\xc2\x9b", "c\xff"}, R"-(("a\x01" "b\xc2\x9b" "c\xff"))-"},
        // The text "\x01" and the byte 0x01 print differently.
        {{R"(\x01)", "\x01"}, R"-(("\\x01" "\x01"))-"},
        {{""}, R"-((""))-"},
    };
    for (const auto &[items, printed] : rows) {
        SCOPED_TRACE(printed);
        EXPECT_EQ(printable_string_list(items), printed);
    }
}

} // namespace
} // namespace xaps
