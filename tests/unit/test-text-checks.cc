#include "text-checks.h"

#include <gtest/gtest.h>

#include <string>

namespace {

TEST(TextChecks, Utf8) {
    const std::pair<std::string, bool> cases[] = {
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
    for (const auto &[text, valid] : cases) {
        SCOPED_TRACE(text);
        EXPECT_EQ(xaps::is_valid_utf8(text), valid);
    }
}

TEST(TextChecks, ControlCharacters) {
    EXPECT_FALSE(xaps::has_control_character("plain text \xc3\xbc"));
    EXPECT_TRUE(xaps::has_control_character("line\nbreak"));
    EXPECT_TRUE(xaps::has_control_character(std::string("nul\0", 4)));
    EXPECT_TRUE(xaps::has_control_character("del\x7f"));
    EXPECT_TRUE(xaps::has_control_character("tab\t"));
}

} // namespace
