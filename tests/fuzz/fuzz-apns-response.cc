// Fuzz target for what APNs answers (apns-worker/apns/apns-payload): the response
// headers as nghttp2 hands them over and the JSON error body; and, with the
// same bytes as an account id, the push body we write.
//
// Input: header lines "name: value" up to the first empty line, then the
// body. Invariants: nothing throws (the functions are noexcept: a throw
// would terminate); an accepted :status is three digits from 100 to 599 and
// a refused one changes nothing; apns-id is bounded; the error body parser
// is deterministic, and what it returns survives a round trip through
// {"reason":..., "timestamp":...}; and a valid UTF-8 account id comes back
// unchanged from the JSON push body, which has exactly one member.
#include "fuzz-invariant.h"

#include "apns-payload.h"
#include "registration-rules.h"

#include <json/json.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

void check_header(std::string_view name, std::string_view value) {
    int status = 0;
    std::string apns_id = "unchanged";
    const bool accepted = xaps::read_apns_response_header(name, value, status, apns_id);
    if (name == ":status") {
        if (accepted) {
            XAPS_FUZZ_CHECK(status >= 100 && status <= 599);
            XAPS_FUZZ_CHECK(value.size() == 3 && is_digit(value[0]) && is_digit(value[1]) &&
                            is_digit(value[2]));
            XAPS_FUZZ_CHECK(std::to_string(status) == value);
        } else {
            XAPS_FUZZ_CHECK(status == 0);
        }
        XAPS_FUZZ_CHECK(apns_id == "unchanged");
        return;
    }
    XAPS_FUZZ_CHECK(accepted);
    XAPS_FUZZ_CHECK(status == 0);
    if (name == "apns-id" && value.size() <= xaps::max_apns_id_length) {
        XAPS_FUZZ_CHECK(apns_id == value);
    } else {
        XAPS_FUZZ_CHECK(apns_id == "unchanged");
    }
}

std::string compact(const Json::Value &value) {
    Json::StreamWriterBuilder builder;
    builder["indentation"] = "";
    return Json::writeString(builder, value);
}

void check_error_body(std::string_view body) {
    const xaps::ApnsErrorBody parsed = xaps::parse_apns_error(body);
    const xaps::ApnsErrorBody again = xaps::parse_apns_error(body);
    XAPS_FUZZ_CHECK(parsed.reason == again.reason && parsed.timestamp_ms == again.timestamp_ms);
    // What was understood, written back as Apple would, reads the same
    // (jsoncpp's writer re-encodes text, so only for valid UTF-8).
    if (!xaps::is_valid_utf8(parsed.reason)) {
        return;
    }
    Json::Value rebuilt(Json::objectValue);
    rebuilt["reason"] = parsed.reason;
    if (parsed.timestamp_ms) {
        rebuilt["timestamp"] = Json::Int64(*parsed.timestamp_ms);
    }
    const xaps::ApnsErrorBody round_trip = xaps::parse_apns_error(compact(rebuilt));
    XAPS_FUZZ_CHECK(round_trip.reason == parsed.reason);
    XAPS_FUZZ_CHECK(round_trip.timestamp_ms == parsed.timestamp_ms);
}

void check_push_body(std::string_view account_id) {
    // The worker stores only valid UTF-8 without control characters.
    if (!xaps::is_valid_utf8(account_id) || xaps::has_control_character(account_id)) {
        return;
    }
    xaps::ApnsPayloadWriter writer;
    std::string body;
    writer.write_mail_push(account_id, body);
    Json::CharReaderBuilder builder;
    Json::CharReaderBuilder::strictMode(&builder.settings_);
    std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value root;
    std::string errors;
    XAPS_FUZZ_CHECK(reader->parse(body.data(), body.data() + body.size(), &root, &errors));
    XAPS_FUZZ_CHECK(root.isObject() && root.size() == 1 && root["aps"].isObject());
    XAPS_FUZZ_CHECK(root["aps"].size() == 1 && root["aps"]["account-id"].isString());
    XAPS_FUZZ_CHECK(root["aps"]["account-id"].asString() == account_id);
    // The writer reuses its buffers: a second push is not polluted by the first.
    std::string second;
    writer.write_mail_push("x", second);
    XAPS_FUZZ_CHECK(second == R"({"aps":{"account-id":"x"}})");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char *>(data), size);
    std::string_view body = input;
    for (int headers = 0; headers < 32 && !body.empty(); headers++) {
        const std::size_t end = body.find('\n');
        const std::string_view line = body.substr(0, end);
        body.remove_prefix(end == std::string_view::npos ? body.size() : end + 1);
        if (line.empty()) {
            break;
        }
        const std::size_t colon = line.find(": ", 1);
        check_header(line.substr(0, colon),
                     colon == std::string_view::npos ? std::string_view() : line.substr(colon + 2));
    }
    check_error_body(body);
    check_push_body(body);
    return 0;
}
