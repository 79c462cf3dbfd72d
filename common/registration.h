// One device's registration, as the store keeps it and the worker protocol
// carries it. Plain data: the rules about it live in the store and the parser.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xaps {

struct Registration {
    std::string user;         // push user name (Dovecot username or the xaps_user_lookup field)
    std::string account_id;   // aps-account-id: iOS's id for the mail account
    std::string device_token; // aps-device-token: lower-case hex
    std::string subtopic;     // aps-subtopic, e.g. com.apple.mobilemail
    unsigned aps_version = 2; // 1: INBOX only, 2: per mailbox
    std::vector<std::string> mailboxes; // UTF-8 names, as push_notification events carry them
    std::int64_t registered_at = 0;     // unix seconds of the first registration
    std::int64_t last_seen = 0;         // unix seconds of the latest (re-)registration

    bool operator==(const Registration &) const = default;
};

// Limits shared by the IMAP parser (which rejects) and the worker (which
// defends itself against any peer). They bound every stored field. User,
// account id and token together form the store's key, which LMDB caps at
// 511 bytes: 160 + 128 + 200 + 2 separators fit.
namespace limits {
inline constexpr std::size_t max_user_length = 160;
inline constexpr std::size_t max_account_id_length = 128;
inline constexpr std::size_t max_device_token_length = 200;
inline constexpr std::size_t max_subtopic_length = 256;
inline constexpr std::size_t max_mailboxes = 1000;
inline constexpr std::size_t max_mailbox_name_length = 1024;
} // namespace limits

} // namespace xaps
