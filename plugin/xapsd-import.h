// The registration file of xapsd, the Go daemon dovecot-xaps used before
// (github.com/freswa/dovecot-xaps-daemon), read for `doveadm xaps import`.
//
// Plain C++ (jsoncpp) with no Dovecot headers, so that every rule is unit
// tested. The doveadm command supplies the modified UTF-7 decoder and sends
// the result to the worker as IMPORT requests.
//
// The format is what Go's encoding/json makes of xapsd's database.Database
// (internal/database/database.go); its unexported fields are not written:
//
//   {"Users": {"<user>": {"Accounts": {"<aps-account-id>": {
//       "DeviceToken": "<hex>",
//       "Mailboxes": ["INBOX", "Sent Messages"],
//       "RegistrationTime": "2018-09-22T12:42:31.123456789+02:00"}}}}}
//
// xapsd keyed accounts by account id under each (lower-cased) user, kept one
// device token per account, accepted only the subtopic com.apple.mobilemail,
// refreshed RegistrationTime on every re-registration (so it is our
// last_seen) and stored mailbox names as the IMAP client sent them (modified
// UTF-7). Files written before RegistrationTime existed lack it; Go writes
// the zero time as "0001-01-01T00:00:00Z".
#pragma once

#include "registration.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace xaps::plugin {

// Bigger files are refused unread: xapsd's files are kilobytes, and the whole
// file is held in memory while it is parsed.
inline constexpr std::size_t max_xapsd_file_size = 64 * 1024 * 1024;

// The only subtopic xapsd accepted.
inline constexpr const char *xapsd_subtopic = "com.apple.mobilemail";

struct XapsdImportOptions {
    // Unix seconds: the registration and last-seen time of entries whose
    // time is missing, zero or in the future.
    std::int64_t now = 0;
    // Unix seconds: entries whose time is older are skipped as expired (the
    // worker would drop them, as xapsd did after 30 days). 0: none expire.
    std::int64_t expired_before = 0;
    // Converts a modified UTF-7 mailbox name to UTF-8; nullopt when the name
    // is not valid modified UTF-7 (it is then kept as it is). Empty: names are
    // kept as they are.
    std::function<std::optional<std::string>(const std::string &)> decode_mailbox_name;
};

// An entry of the file that cannot become a registration, and why.
struct XapsdSkippedEntry {
    std::string user;
    std::string account_id; // empty when a whole user was skipped
    std::string reason;

    bool operator==(const XapsdSkippedEntry &) const = default;
};

struct XapsdDatabase {
    // Ready for IMPORT: checked with registration-rules.h, the token
    // in lower-case hex, mailbox names in UTF-8 without duplicates, INBOX
    // spelled "INBOX", aps_version 2, registered_at == last_seen.
    std::vector<Registration> registrations;
    std::vector<XapsdSkippedEntry> skipped;
};

// Throws Error(invalid_input) when the text is not JSON or not an xapsd
// database at all (no "Users" object). Entries that are wrong on their own
// are skipped and reported, not fatal.
XapsdDatabase parse_xapsd_database(std::string_view json_text, const XapsdImportOptions &options);

// Reads the file and parses it. Throws Error(not_found) when it cannot be
// read, Error(invalid_input) when it is larger than max_xapsd_file_size or
// parse_xapsd_database() refuses it.
XapsdDatabase read_xapsd_database(const std::string &path, const XapsdImportOptions &options);

// An RFC 3339 time as Go's time.Time marshals it ("2006-01-02T15:04:05Z",
// optional fraction, "Z" or "+hh:mm"/"-hh:mm") in unix seconds, the fraction
// dropped; nullopt when the text is not such a time.
std::optional<std::int64_t> parse_rfc3339_time(std::string_view text);

} // namespace xaps::plugin
