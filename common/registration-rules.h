// What each field of a registration must be, defined once: the IMAP parser
// (XAPPLEPUSHSERVICE), the worker (REGISTER and IMPORT, against any peer),
// the xapsd importer and the APNs client (before a push) all check with these
// functions, so that their rules cannot drift apart.
//
// Each check returns the value as it is stored (normalised) or the rule it
// breaks. How a breach is answered (BAD or NO, FAIL, a skipped entry) stays
// with the caller. Hand-written text checks, because this code has no Dovecot
// (uni_utf8_str_is_valid) and none of our other libraries exposes a UTF-8
// validator.
#pragma once

#include "registration.h"

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace xaps {

// ASCII case folding: the protocol's keys, INBOX, hex digits and user names
// compare this way. Bytes outside A-Z are left as they are.
std::string lower_ascii(std::string_view text);
bool equals_ignoring_ascii_case(std::string_view a, std::string_view b);

// Any C0 control character or DEL.
bool has_control_character(std::string_view text);
// A C1 control character (U+0080 to U+009F) in UTF-8: terminals take U+009B
// for CSI as they take ESC [.
bool has_c1_control_character(std::string_view utf8);
// Well-formed UTF-8 (RFC 3629): no overlong forms, surrogates or code points
// past U+10FFFF. Account ids go into the JSON body Apple receives.
bool is_valid_utf8(std::string_view text);

struct RuleBreach {
    enum class Problem {
        missing, // empty
        too_long,
        too_many,
        control_character,
        not_utf8,
        not_hex,
        odd_length,
        not_accepted, // none of the values this server takes
    };
    Problem problem;
    // A sentence for an IMAP tagged NO reply or a FAIL reply: no client data,
    // no CR/LF.
    std::string reason;

    bool operator==(const RuleBreach &) const = default;
};

template <typename Value> using Checked = std::variant<Value, RuleBreach>;

// Each check tests its conditions in the order written here, so a value that
// breaks several of them always gets the same reason.

// Non-empty, at most limits::max_user_length, no control characters (tested
// last: a breach for them means the name fits the store).
Checked<std::string> check_user(std::string_view user);
// Non-empty, at most limits::max_account_id_length, no control characters,
// UTF-8.
Checked<std::string> check_account_id(std::string_view account_id);
// Non-empty, at most limits::max_device_token_length, hex digits, an even
// number of them. Normalised to lower case, as APNs URLs and the store use it.
Checked<std::string> check_device_token(std::string_view token);
// Non-empty, one of `accepted` (compared exactly).
Checked<std::string> check_subtopic(std::string_view subtopic,
                                    std::span<const std::string> accepted);
// "1" or "2" exactly.
Checked<unsigned> check_aps_version(std::string_view text);
Checked<unsigned> check_aps_version(unsigned version);
// At most limits::max_mailboxes.
std::optional<RuleBreach> check_mailbox_count(std::size_t count);
// Non-empty, at most limits::max_mailbox_name_length, no C0 control characters
// or DEL, UTF-8, no C1 control characters. Normalised by
// canonical_mailbox_name(). Names are registered as UTF-8, so this is the rule
// for the decoded name: the IMAP parser checks the name as sent (modified
// UTF-7) and again once decoded, since "&AAE-" is plain ASCII that decodes to
// U+0001.
Checked<std::string> check_mailbox_name(std::string_view name);
// INBOX is case-insensitive (RFC 3501) and push_notification events always
// spell it "INBOX"; other names, INBOX's children included, keep their case.
std::string canonical_mailbox_name(std::string name);

} // namespace xaps
