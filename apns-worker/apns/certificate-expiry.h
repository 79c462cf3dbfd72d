// When the APNs client certificate needs the admin's attention. Apple's push
// certificates last a year and an expired one stops every push, so the
// worker warns well before (at start and daily) and says when it happened.
#pragma once

#include "apns-settings.h"
#include "utc-time.h"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace xaps {

inline constexpr std::chrono::days certificate_warning_period{30};

struct CertificateNotice {
    LogLevel level; // warning: expires soon; error: expired
    std::string message;
};

// What to log about `file`, whose certificate expires at `expiry`, seen at
// `now`: nothing while more than warn_before is left.
std::optional<CertificateNotice>
certificate_expiry_notice(std::string_view file, std::chrono::system_clock::time_point expiry,
                          std::chrono::system_clock::time_point now,
                          std::chrono::days warn_before = certificate_warning_period);

} // namespace xaps
