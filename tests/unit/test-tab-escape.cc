#include "tab-escape.h"

#include <gtest/gtest.h>

namespace {

struct EscapeCase {
    std::string raw;
    std::string escaped;
};

TEST(TabEscape, EscapesLikeDovecot) {
    const EscapeCase cases[] = {
        {"", ""},          {"plain", "plain"},  {"a\tb", "a\001tb"}, {"line\r\n", "line\001r\001n"},
        {"\001", "\0011"}, {"\001t", "\0011t"},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.raw);
        EXPECT_EQ(xaps::tab_escape(c.raw), c.escaped);
        EXPECT_EQ(xaps::tab_unescape(c.escaped), c.raw);
    }
}

TEST(TabEscape, UnescapesDovecotNulEscapeAndKeepsUnknownEscapes) {
    EXPECT_EQ(xaps::tab_unescape("a\0010b"), std::string("a\0b", 3));
    EXPECT_EQ(xaps::tab_unescape("a\001xb"), "axb");
    EXPECT_EQ(xaps::tab_unescape("trailing\001"), "trailing\001");
}

TEST(TabEscape, JoinAndSplitRoundTrip) {
    std::vector<std::string> fields{"1", "REGISTER", "user\twith tab", "", "x\ny"};
    std::string line = xaps::join_line(fields);
    ASSERT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    line.pop_back();
    EXPECT_EQ(xaps::split_line(line), fields);
}

TEST(TabEscape, SplitKeepsEmptyFields) {
    EXPECT_EQ(xaps::split_line(""), std::vector<std::string>{""});
    EXPECT_EQ(xaps::split_line("a\t\tb\t"), (std::vector<std::string>{"a", "", "b", ""}));
}

} // namespace
