#include "xaps-assert.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

namespace {

int checked_half(int even) {
    XAPS_ASSERT(even % 2 == 0);
    return even / 2;
}

TEST(XapsAssertTest, HoldingInvariantCostsNothingVisible) {
    EXPECT_EQ(checked_half(8), 4);
}

TEST(XapsAssertDeathTest, BrokenInvariantStopsTheProcessNamingExpressionAndPlace) {
    EXPECT_DEATH(checked_half(3),
                 "test-xaps-assert\\.cc: line 11 \\(checked_half\\): assertion failed: "
                 "\\(even % 2 == 0\\)");
}

TEST(XapsAssertDeathTest, HandlerGetsTheMessageFirst) {
    EXPECT_EXIT(
        {
            xaps::set_assertion_handler([](const char *message) {
                std::fprintf(stderr, "handler: %s\n", message);
                std::_Exit(7);
            });
            checked_half(5);
        },
        testing::ExitedWithCode(7), "handler: file .*assertion failed: \\(even % 2 == 0\\)");
}

} // namespace
