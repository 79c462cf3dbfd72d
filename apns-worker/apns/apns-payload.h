// The JSON of APNs requests and error answers, through jsoncpp, and what iOS
// Mail requires of a push to act on it. Writing runs once per push: it reuses
// its buffers.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace xaps {

class ApnsPayloadWriter {
public:
    // Replaces `out` with {"aps":{"account-id":"<account_id>","m":[...]}},
    // escaped as JSON; without "m" when `mailbox_hashes` is empty (iOS then
    // fetches the INBOX only). `account_id` holds no NUL (the caller checks).
    void write_mail_push(std::string_view account_id, std::span<const std::string> mailbox_hashes,
                         std::string &out);
    void write_mail_push(std::string_view account_id, std::string &out) {
        write_mail_push(account_id, {}, out);
    }

private:
    std::string account_id_; // NUL-terminated copy for jsoncpp
};

// An entry of a push's "m": the MD5 of the mailbox name as echoed to the
// phone in `* XAPPLEPUSHSERVICE "mailbox"`, decoded from modified UTF-7 (so
// `utf8_name` is UTF-8 bytes), in upper-case hex. iOS keys its table with
// upper-case digests of the echoed names and upper-cases each entry before
// the lookup: either case would match today, and upper case is the one that
// matches its table as it is. Throws Error(internal) when OpenSSL has no MD5.
std::string mailbox_name_digest(std::string_view utf8_name);

// iOS Mail acts only on pushes whose topic begins with one of these; Apple
// accepts pushes on other topics (an MDM certificate's, for one) and the
// phone drops them.
inline constexpr std::string_view mail_topic_prefixes[] = {"com.apple.mail.",
                                                           "com.apple.mobilemail.push."};
bool is_mail_topic(std::string_view topic) noexcept;
// For the log and `doveadm xaps status`: empty for a topic iOS Mail acts on,
// else what is wrong and what it costs.
std::string mail_topic_warning(std::string_view topic);

// Apple's apns-id is a UUID; a longer one is not kept.
inline constexpr std::size_t max_apns_id_length = 128;

// One header of an APNs answer, as nghttp2 hands it over: ":status" must be
// three digits from 100 to 599 and sets `status`; "apns-id" (at most
// max_apns_id_length bytes) sets `apns_id`; other headers are ignored.
// Returns false for a malformed :status (the caller resets the stream):
// "000" must not pass for "no answer yet" (status 0).
bool read_apns_response_header(std::string_view name, std::string_view value, int &status,
                               std::string &apns_id) noexcept;

// What an APNs error answer says: {"reason":"...", "timestamp":<ms>}.
struct ApnsErrorBody {
    std::string reason; // empty when absent or not JSON
    std::optional<std::int64_t> timestamp_ms;
};
// Never throws: a body that is not the JSON expected gives an empty result.
ApnsErrorBody parse_apns_error(std::string_view body) noexcept;

} // namespace xaps
