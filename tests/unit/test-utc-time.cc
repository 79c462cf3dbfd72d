#include "utc-time.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace xaps {
namespace {

using namespace std::chrono_literals;
using std::chrono::system_clock;

TEST(UtcTime, UnixSeconds) {
    struct Row {
        std::int64_t seconds;
        std::string text;
    };
    const Row rows[] = {
        {0, "1970-01-01T00:00:00Z"},
        {1700000000, "2023-11-14T22:13:20Z"},
        {1798847999, "2027-01-01T23:59:59Z"},
        {-1, "1969-12-31T23:59:59Z"},
        {951782400, "2000-02-29T00:00:00Z"},
        // Past what struct tm's int year holds: the number itself.
        {INT64_MAX, "9223372036854775807"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.seconds);
        EXPECT_EQ(iso8601_utc(row.seconds), row.text);
    }
}

TEST(UtcTime, TimePointDropsTheFraction) {
    EXPECT_EQ(iso8601_utc(system_clock::from_time_t(0)), "1970-01-01T00:00:00Z");
    EXPECT_EQ(iso8601_utc(system_clock::from_time_t(1700000000)), "2023-11-14T22:13:20Z");
    EXPECT_EQ(iso8601_utc(system_clock::from_time_t(1700000000) + 999ms), "2023-11-14T22:13:20Z");
}

} // namespace
} // namespace xaps
