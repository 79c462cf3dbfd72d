#include "client-limit-watch.h"

#include <gtest/gtest.h>

namespace {

using xaps::ClientLimitWatch;

TEST(ClientLimitWatch, SaysNothingBelowNinetyPercent) {
    ClientLimitWatch watch(4096);
    for (std::size_t open : {1u, 1000u, 3686u}) {
        EXPECT_FALSE(watch.on_accept(open)) << open;
    }
}

TEST(ClientLimitWatch, WarnsOnceAtNinetyPercentNamingTheLimit) {
    ClientLimitWatch watch(4096);
    // 90% of 4096 is 3686.4: the first count at or past it is 3687.
    const std::optional<std::string> warning = watch.on_accept(3687);
    ASSERT_TRUE(warning);
    EXPECT_EQ(
        warning->rfind("3687 connections open, 90% of service xaps { client_limit = 4096 }", 0), 0u)
        << *warning;
    EXPECT_NE(warning->find("raise client_limit"), std::string::npos) << *warning;
    EXPECT_FALSE(watch.on_accept(3700));
    EXPECT_FALSE(watch.on_accept(4096));
}

TEST(ClientLimitWatch, WarnsAgainOnlyAfterFallingBelowHalf) {
    ClientLimitWatch watch(1000);
    ASSERT_TRUE(watch.on_accept(900));
    EXPECT_FALSE(watch.on_accept(500)); // half: still within the same episode
    EXPECT_FALSE(watch.on_accept(950));
    EXPECT_FALSE(watch.on_accept(499)); // below half: the episode is over
    const std::optional<std::string> again = watch.on_accept(901);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->rfind("901 connections open, 90% of service xaps { client_limit = 1000 }", 0),
              0u)
        << *again;
}

TEST(ClientLimitWatch, AnUnknownLimitIsNeverWarnedAbout) {
    ClientLimitWatch watch(0);
    EXPECT_FALSE(watch.on_accept(1));
    EXPECT_FALSE(watch.on_accept(100000));
}

TEST(ClientLimitWatch, ASmallLimitWarnsAtItsOwnNinetyPercent) {
    ClientLimitWatch watch(1);
    const std::optional<std::string> warning = watch.on_accept(1);
    ASSERT_TRUE(warning);
    EXPECT_EQ(warning->rfind("1 connections open, 100% of service xaps { client_limit = 1 }", 0),
              0u)
        << *warning;
}

} // namespace
