#include "daily-stamp.h"

#include "temporary-directory.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

// 2026-12-05 10:00:00 UTC
const Clock::time_point morning{std::chrono::seconds(1796464800)};

long long stamped_seconds(const std::string &path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return static_cast<long long>(st.st_mtim.tv_sec);
}

TEST(DailyStamp, FirstCallTakesTheTurnAndLaterOnesWaitADay) {
    xaps::test::TemporaryDirectory dir;
    const std::string stamp = dir.path() + "/.stamp";
    EXPECT_TRUE(xaps::plugin::take_daily_turn(stamp, morning));
    EXPECT_EQ(stamped_seconds(stamp), 1796464800);
    EXPECT_FALSE(xaps::plugin::take_daily_turn(stamp, morning));
    EXPECT_FALSE(xaps::plugin::take_daily_turn(stamp, morning + 23h + 59min));
    EXPECT_TRUE(xaps::plugin::take_daily_turn(stamp, morning + 24h));
    EXPECT_EQ(stamped_seconds(stamp), 1796464800 + 86400);
    EXPECT_FALSE(xaps::plugin::take_daily_turn(stamp, morning + 25h));
}

TEST(DailyStamp, AStampFromTheFutureDoesNotSilenceIt) {
    xaps::test::TemporaryDirectory dir;
    const std::string stamp = dir.path() + "/.stamp";
    ASSERT_TRUE(xaps::plugin::take_daily_turn(stamp, morning + 48h));
    EXPECT_TRUE(xaps::plugin::take_daily_turn(stamp, morning));
}

TEST(DailyStamp, WhereNoStampCanBeKeptEveryCallTakesTheTurn) {
    EXPECT_TRUE(xaps::plugin::take_daily_turn("/nonexistent-dir/.stamp", morning));
    EXPECT_TRUE(xaps::plugin::take_daily_turn("/nonexistent-dir/.stamp", morning));
}

} // namespace
