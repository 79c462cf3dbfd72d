// The JSON of APNs requests and error answers, through jsoncpp. Writing runs
// once per push: it reuses its buffers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace xaps {

class ApnsPayloadWriter {
public:
    // Replaces `out` with {"aps":{"account-id":"<account_id>"}}, escaped as
    // JSON. `account_id` holds no NUL (the caller checks).
    void write_mail_push(std::string_view account_id, std::string &out);

private:
    std::string account_id_; // NUL-terminated copy for jsoncpp
};

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
