// The JSON of APNs requests and error answers, through jsoncpp. Writing
// reuses its buffers: it runs once per push.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>

#include <json/json.h>

namespace xaps {

class ApnsPayloadWriter {
public:
    ApnsPayloadWriter();
    ApnsPayloadWriter(const ApnsPayloadWriter &) = delete;
    ApnsPayloadWriter &operator=(const ApnsPayloadWriter &) = delete;

    // Replaces `out` with {"aps":{"account-id":"<account_id>"}}, escaped as JSON.
    void write_mail_push(std::string_view account_id, std::string &out);

private:
    // A streambuf appending to a std::string that the caller owns, so that the
    // writer's output lands in the request without an intermediate copy.
    class StringAppender : public std::streambuf {
    public:
        std::string *target = nullptr;

    protected:
        int_type overflow(int_type c) override;
        std::streamsize xsputn(const char *data, std::streamsize length) override;
    };

    Json::Value payload_;
    Json::Value *account_id_; // inside payload_
    std::unique_ptr<Json::StreamWriter> writer_;
    StringAppender appender_;
    std::ostream stream_;
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
