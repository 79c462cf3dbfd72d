#include "duration.h"

#include "xaps-error.h"

#include <gtest/gtest.h>

using namespace std::chrono_literals;

namespace {

TEST(Duration, AcceptsDovecotUnits) {
    const std::pair<const char *, std::chrono::milliseconds> cases[] = {
        {"30", 30s},     {"30s", 30s}, {"30 secs", 30s}, {"250ms", 250ms}, {"10min", 10min},
        {"10 m", 10min}, {"24h", 24h}, {"2 hours", 2h},  {"30d", 720h},    {"1 day", 24h},
        {"2w", 336h},    {" 5s ", 5s}, {"0", 0s},
    };
    for (const auto &[text, expected] : cases) {
        SCOPED_TRACE(text);
        EXPECT_EQ(xaps::parse_duration(text), expected);
    }
}

TEST(Duration, RejectsGarbage) {
    for (const char *text : {"", "s", "-5s", "1.5h", "10 fortnights", "5s5",
                             "99999999999999999999d", "9223372036854775807d"}) {
        SCOPED_TRACE(text);
        try {
            xaps::parse_duration(text);
            ADD_FAILURE() << "accepted";
        } catch (const xaps::Error &e) {
            EXPECT_EQ(e.kind(), xaps::ErrorKind::config);
        }
    }
}

} // namespace
