// Fuzz target for the xapsd database.json reader (plugin/xapsd-import) that
// `doveadm xaps import` runs on a file an admin hands it.
//
// The input is the file's text. Invariants: only Error(invalid_input) is
// thrown (a jsoncpp exception escaping would abort doveadm with a useless
// message); every registration produced passes the worker's own checks and
// the import rules (lower-case hex token of even length, bounded fields,
// non-empty duplicate-free mailbox list with INBOX spelled "INBOX", times
// within [expired_before, now], registered_at == last_seen, the xapsd
// subtopic, aps-version 2); every skipped entry says why; the result does
// not depend on anything but the input. parse_rfc3339_time is fuzzed on the
// same bytes: what it accepts is a time of years 0000 to 9999.
#include "fuzz-invariant.h"

#include "xapsd-import.h"

#include "registration-rules.h"
#include "registration.h"
#include "xaps-error.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace {

constexpr std::int64_t now = 1732790400;               // 2024-11-28
constexpr std::int64_t expired_before = now - 2592000; // 30 days

bool is_lower_hex(std::string_view text) {
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A stand-in for Dovecot's modified UTF-7 decoder: "&-" is '&', any other
// '&' makes the name invalid (kept as it is by the importer).
std::optional<std::string> toy_decode(const std::string &name) {
    std::string out;
    for (std::size_t i = 0; i < name.size(); i++) {
        if (name[i] != '&') {
            out += name[i];
        } else if (i + 1 < name.size() && name[i + 1] == '-') {
            out += '&';
            i++;
        } else {
            return std::nullopt;
        }
    }
    return out;
}

void check_registration(const xaps::Registration &reg) {
    XAPS_FUZZ_CHECK(!reg.user.empty() && reg.user.size() <= xaps::limits::max_user_length);
    XAPS_FUZZ_CHECK(!xaps::has_control_character(reg.user));
    XAPS_FUZZ_CHECK(!reg.account_id.empty() &&
                    reg.account_id.size() <= xaps::limits::max_account_id_length);
    XAPS_FUZZ_CHECK(!xaps::has_control_character(reg.account_id));
    XAPS_FUZZ_CHECK(!reg.device_token.empty() &&
                    reg.device_token.size() <= xaps::limits::max_device_token_length);
    XAPS_FUZZ_CHECK(reg.device_token.size() % 2 == 0 && is_lower_hex(reg.device_token));
    XAPS_FUZZ_CHECK(reg.subtopic == xaps::plugin::xapsd_subtopic);
    XAPS_FUZZ_CHECK(reg.aps_version == 2);
    XAPS_FUZZ_CHECK(!reg.mailboxes.empty() && reg.mailboxes.size() <= xaps::limits::max_mailboxes);
    std::set<std::string> seen;
    for (const std::string &mailbox : reg.mailboxes) {
        XAPS_FUZZ_CHECK(!mailbox.empty() &&
                        mailbox.size() <= xaps::limits::max_mailbox_name_length);
        XAPS_FUZZ_CHECK(!xaps::has_control_character(mailbox));
        XAPS_FUZZ_CHECK(seen.insert(mailbox).second);
        std::string lower = mailbox;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return char(c >= 'A' && c <= 'Z' ? c + 32 : c); });
        XAPS_FUZZ_CHECK(lower != "inbox" || mailbox == "INBOX");
    }
    XAPS_FUZZ_CHECK(reg.registered_at == reg.last_seen);
    XAPS_FUZZ_CHECK(reg.registered_at >= expired_before && reg.registered_at <= now);
}

bool same(const xaps::plugin::XapsdDatabase &a, const xaps::plugin::XapsdDatabase &b) {
    return a.registrations == b.registrations && a.skipped == b.skipped;
}

void check_time(std::string_view text) {
    const std::optional<std::int64_t> time = xaps::plugin::parse_rfc3339_time(text);
    if (!time) {
        return;
    }
    XAPS_FUZZ_CHECK(text.size() >= 20);
    // 0000-01-01T00:00:00+23:59 to 9999-12-31T23:59:59-23:59.
    XAPS_FUZZ_CHECK(*time >= -62167219200LL - 86400 && *time <= 253402300799LL + 86400);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    check_time(input);

    xaps::plugin::XapsdImportOptions options;
    options.now = now;
    options.expired_before = expired_before;
    options.decode_mailbox_name = toy_decode;
    try {
        const xaps::plugin::XapsdDatabase database =
            xaps::plugin::parse_xapsd_database(input, options);
        for (const xaps::Registration &reg : database.registrations) {
            check_registration(reg);
        }
        for (const auto &skipped : database.skipped) {
            XAPS_FUZZ_CHECK(!skipped.reason.empty());
        }
        XAPS_FUZZ_CHECK(same(database, xaps::plugin::parse_xapsd_database(input, options)));
    } catch (const xaps::Error &error) {
        XAPS_FUZZ_CHECK(error.kind() == xaps::ErrorKind::invalid_input);
        XAPS_FUZZ_CHECK(std::string_view(error.what()).size() <= 400);
    }
    return 0;
}
