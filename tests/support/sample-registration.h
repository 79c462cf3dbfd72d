// Registrations for the store tests, shaped as iOS Mail sends them.
#pragma once

#include "registration.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace xaps::test {

// Subtopic com.apple.mobilemail, aps version 2, no times (the store sets
// them on put; imports and comparisons add them with with_times()).
inline Registration sample_registration(std::string user, std::string account_id, std::string token,
                                        std::vector<std::string> mailboxes = {"INBOX"}) {
    Registration registration;
    registration.user = std::move(user);
    registration.account_id = std::move(account_id);
    registration.device_token = std::move(token);
    registration.subtopic = "com.apple.mobilemail";
    registration.aps_version = 2;
    registration.mailboxes = std::move(mailboxes);
    return registration;
}

inline Registration with_times(Registration registration, std::int64_t registered_at,
                               std::int64_t last_seen) {
    registration.registered_at = registered_at;
    registration.last_seen = last_seen;
    return registration;
}

} // namespace xaps::test
