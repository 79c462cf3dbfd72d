#include "apns-payload.h"

namespace xaps {

ApnsPayloadWriter::ApnsPayloadWriter() : stream_(&appender_) {
    payload_["aps"]["account-id"] = "";
    account_id_ = &payload_["aps"]["account-id"];
    Json::StreamWriterBuilder builder;
    builder["indentation"] = "";
    builder["commentStyle"] = "None";
    writer_.reset(builder.newStreamWriter());
}

void ApnsPayloadWriter::write_mail_push(std::string_view account_id, std::string &out) {
    *account_id_ = Json::Value(account_id.data(), account_id.data() + account_id.size());
    out.clear();
    appender_.target = &out;
    writer_->write(payload_, &stream_);
    stream_.flush();
    appender_.target = nullptr;
}

ApnsPayloadWriter::StringAppender::int_type
ApnsPayloadWriter::StringAppender::overflow(int_type c) {
    if (!traits_type::eq_int_type(c, traits_type::eof()))
        target->push_back(traits_type::to_char_type(c));
    return traits_type::not_eof(c);
}

std::streamsize ApnsPayloadWriter::StringAppender::xsputn(const char *data,
                                                          std::streamsize length) {
    target->append(data, static_cast<std::size_t>(length));
    return length;
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
        const Json::Value &timestamp = root["timestamp"];
        if (timestamp.isIntegral())
            result.timestamp_ms = timestamp.asInt64();
        else if (timestamp.isDouble())
            result.timestamp_ms = static_cast<std::int64_t>(timestamp.asDouble());
    } catch (...) {
        return ApnsErrorBody{};
    }
    return result;
}

} // namespace xaps
