#include "certificate-expiry.h"

namespace xaps {

std::optional<CertificateNotice>
certificate_expiry_notice(std::string_view file, std::chrono::system_clock::time_point expiry,
                          std::chrono::system_clock::time_point now,
                          std::chrono::days warn_before) {
    const std::string certificate = "APNs certificate " + std::string(file);
    if (expiry <= now)
        return CertificateNotice{LogLevel::error, certificate + " expired on " +
                                                      iso8601_utc(expiry) +
                                                      ": push is disabled until it is renewed"};
    if (expiry - now > warn_before)
        return std::nullopt;
    const auto days_left = std::chrono::floor<std::chrono::days>(expiry - now).count();
    const std::string left = days_left == 0   ? "less than a day"
                             : days_left == 1 ? "1 day"
                                              : std::to_string(days_left) + " days";
    return CertificateNotice{LogLevel::warning, certificate + " expires on " + iso8601_utc(expiry) +
                                                    ", in " + left +
                                                    ": renew it before then or pushes stop"};
}

} // namespace xaps
