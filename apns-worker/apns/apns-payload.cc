#include "apns-payload.h"

#include "hex-digest.h"

#include <json/json.h>

#include <memory>

namespace xaps {

// The body's shape is fixed: every value is a JSON string written by jsoncpp
// (its quoting, the same as its writers use) and the punctuation around them
// is literal. A Json::Value written by a StreamWriter cost about 8% of the
// worker's CPU per push (perf, bench-push).
void ApnsPayloadWriter::write_mail_push(std::string_view account_id,
                                        std::span<const std::string> mailbox_hashes,
                                        std::string &out) {
    account_id_.assign(account_id);
    out.assign(R"({"aps":{"account-id":)");
    out.append(Json::valueToQuotedString(account_id_.c_str()));
    if (!mailbox_hashes.empty()) {
        out.append(R"(,"m":[)");
        for (std::size_t i = 0; i < mailbox_hashes.size(); ++i) {
            if (i > 0) {
                out.push_back(',');
            }
            out.append(Json::valueToQuotedString(mailbox_hashes[i].c_str()));
        }
        out.push_back(']');
    }
    out.append("}}");
}

std::string mailbox_name_digest(std::string_view utf8_name) {
    return hex_digest(EVP_md5(), utf8_name, HexCase::upper);
}

bool is_mail_topic(std::string_view topic) noexcept {
    for (std::string_view prefix : mail_topic_prefixes) {
        if (topic.starts_with(prefix)) {
            return true;
        }
    }
    return false;
}

std::string mail_topic_warning(std::string_view topic) {
    if (is_mail_topic(topic)) {
        return {};
    }
    return "the APNs topic " + std::string(topic) +
           " begins with neither com.apple.mail. nor com.apple.mobilemail.push.: Apple accepts "
           "the pushes, but iOS Mail ignores them (is this the certificate of another service, "
           "an MDM certificate for one?)";
}

bool read_apns_response_header(std::string_view name, std::string_view value, int &status,
                               std::string &apns_id) noexcept {
    if (name == ":status") {
        if (value.size() != 3 || value[0] < '1' || value[0] > '5' || value[1] < '0' ||
            value[1] > '9' || value[2] < '0' || value[2] > '9')
            return false;
        status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    } else if (name == "apns-id" && value.size() <= max_apns_id_length) {
        try {
            apns_id.assign(value);
        } catch (...) {
            // Only the id is lost; the answer still counts.
        }
    }
    return true;
}

ApnsErrorBody parse_apns_error(std::string_view body) noexcept {
    ApnsErrorBody result;
    try {
        Json::CharReaderBuilder builder;
        const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
        Json::Value root;
        std::string errors;
        if (!reader->parse(body.data(), body.data() + body.size(), &root, &errors) ||
            !root.isObject())
            return result;
        const Json::Value &reason = root["reason"];
        if (reason.isString())
            result.reason = reason.asString();
        // Only a timestamp an int64 holds: asInt64() throws for a larger
        // integer (which cost the reason too) and casting a double outside
        // the range is undefined behaviour (found by fuzz-apns-response:
        // {"timestamp":1e300}).
        const Json::Value &timestamp = root["timestamp"];
        if (timestamp.isInt64())
            result.timestamp_ms = timestamp.asInt64();
        else if (timestamp.isDouble() && timestamp.asDouble() >= -9.2e18 &&
                 timestamp.asDouble() <= 9.2e18)
            result.timestamp_ms = static_cast<std::int64_t>(timestamp.asDouble());
    } catch (...) {
        return ApnsErrorBody{};
    }
    return result;
}

} // namespace xaps
