// What the worker tells the admin about the client certificate's expiry.
#include "certificate-expiry.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace xaps {
namespace {

using namespace std::chrono_literals;
using std::chrono::system_clock;

TEST(CertificateExpiry, WarnsWithinThirtyDaysAndErrsOnceExpired) {
    const auto now = system_clock::from_time_t(1700000000); // 2023-11-14T22:13:20Z
    struct Row {
        std::chrono::seconds left;
        std::optional<LogLevel> level;
        std::string says; // part of the message
    };
    const std::vector<Row> rows = {
        {std::chrono::days{365}, std::nullopt, ""},
        {std::chrono::days{30} + 1s, std::nullopt, ""},
        {std::chrono::days{30}, LogLevel::warning, "in 30 days"},
        {std::chrono::days{12} + 5h, LogLevel::warning,
         "expires on 2023-11-27T03:13:20Z, in 12 days"},
        {std::chrono::days{1}, LogLevel::warning, "in 1 day"},
        {3h, LogLevel::warning, "in less than a day"},
        {1s, LogLevel::warning, "in less than a day"},
        {0s, LogLevel::error, "expired on 2023-11-14T22:13:20Z"},
        {-std::chrono::days{3}, LogLevel::error, "expired on 2023-11-11T22:13:20Z"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.left.count());
        const auto notice = certificate_expiry_notice("/etc/apns/cert.pem", now + row.left, now);
        ASSERT_EQ(notice.has_value(), row.level.has_value());
        if (!notice)
            continue;
        EXPECT_EQ(notice->level, *row.level);
        EXPECT_NE(notice->message.find("/etc/apns/cert.pem"), std::string::npos) << notice->message;
        EXPECT_NE(notice->message.find(row.says), std::string::npos) << notice->message;
    }
}

} // namespace
} // namespace xaps
