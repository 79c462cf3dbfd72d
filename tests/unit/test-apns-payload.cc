// The push body iOS Mail reads, the mailbox digests in it, the topics iOS Mail
// acts on, and the reading of Apple's answers. Expected digests are literals
// (`printf '%s' NAME | openssl md5`, upper-cased), not computed here.
#include "apns-payload.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <memory>
#include <string>
#include <vector>

namespace {

using xaps::ApnsPayloadWriter;

Json::Value parse(const std::string &text) {
    Json::CharReaderBuilder builder;
    const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value value;
    std::string errors;
    EXPECT_TRUE(reader->parse(text.data(), text.data() + text.size(), &value, &errors))
        << text << ": " << errors;
    return value;
}

TEST(ApnsPayload, WithoutHashesTheBodyHasNoM) {
    ApnsPayloadWriter writer;
    std::string body;
    writer.write_mail_push("0715A26B-CA09-4730-A419-793000CA982E", body);
    EXPECT_EQ(body, R"({"aps":{"account-id":"0715A26B-CA09-4730-A419-793000CA982E"}})");
    writer.write_mail_push("A", std::vector<std::string>{}, body);
    EXPECT_EQ(body, R"({"aps":{"account-id":"A"}})") << "an empty m would make iOS ignore the push";
}

TEST(ApnsPayload, HashesGoIntoMInOrder) {
    ApnsPayloadWriter writer;
    std::string body;
    const std::vector<std::string> hashes{"7E33429F656F1E6E9D79B29C3F82C57E",
                                          "579DB7EB2F78B2CB1F7F367CFF50C7A7"};
    writer.write_mail_push("A", hashes, body);
    EXPECT_EQ(body, R"({"aps":{"account-id":"A","m":["7E33429F656F1E6E9D79B29C3F82C57E",)"
                    R"("579DB7EB2F78B2CB1F7F367CFF50C7A7"]}})");
    Json::Value parsed = parse(body);
    ASSERT_TRUE(parsed["aps"]["m"].isArray());
    EXPECT_EQ(parsed["aps"]["m"].size(), 2U);
    EXPECT_EQ(parsed["aps"]["account-id"], "A");

    // The writer reuses its buffers: a later push without hashes has no m.
    writer.write_mail_push("B", body);
    EXPECT_EQ(body, R"({"aps":{"account-id":"B"}})");
}

TEST(ApnsPayload, TheAccountIdIsEscapedAsJson) {
    ApnsPayloadWriter writer;
    std::string body;
    writer.write_mail_push("a\"b\\c\x01", std::vector<std::string>{"X"}, body);
    Json::Value parsed = parse(body);
    EXPECT_EQ(parsed["aps"]["account-id"], "a\"b\\c\x01");
    EXPECT_EQ(parsed["aps"]["m"][0], "X");
}

TEST(ApnsPayload, MailboxDigestIsUpperCaseMd5OfTheUtf8Name) {
    EXPECT_EQ(xaps::mailbox_name_digest("INBOX"), "7E33429F656F1E6E9D79B29C3F82C57E");
    EXPECT_EQ(xaps::mailbox_name_digest("inbox"), "AF1CD994DFCB9286C394D142687FF5A0")
        << "the name as echoed, in its case";
    EXPECT_EQ(xaps::mailbox_name_digest("Sent Messages"), "579DB7EB2F78B2CB1F7F367CFF50C7A7");
    EXPECT_EQ(xaps::mailbox_name_digest("Archive/2024"), "CCD7D7A6D1558BB39540226CFA071C8C")
        << "the full name, hierarchy separator included";
    EXPECT_EQ(xaps::mailbox_name_digest("Entw\xC3\xBCrfe"), "6935862F74F620598B6B2549C202AAFA");
    EXPECT_EQ(xaps::mailbox_name_digest("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"),
              "00110AF8B4393EF3F72C50BE5B332BEC");
}

TEST(ApnsPayload, MailTopicsAreTheTwoFamiliesIosMailActsOn) {
    EXPECT_TRUE(xaps::is_mail_topic("com.apple.mail.XServer.0715a26b-ca09-4730"));
    EXPECT_TRUE(xaps::is_mail_topic("com.apple.mail.nil"));
    EXPECT_TRUE(xaps::is_mail_topic("com.apple.mobilemail.push.example"));
    EXPECT_EQ(xaps::mail_topic_warning("com.apple.mail.XServer.x"), "");
    EXPECT_EQ(xaps::mail_topic_warning("com.apple.mobilemail.push.example"), "");

    for (const char *topic :
         {"com.apple.mgmt.External.4b6c", "com.apple.mail", "com.apple.mailx.y",
          "com.apple.mobilemail.pushx", "com.apple.mobilemail", "", "COM.APPLE.MAIL.XServer.x"}) {
        SCOPED_TRACE(topic);
        EXPECT_FALSE(xaps::is_mail_topic(topic));
        const std::string warning = xaps::mail_topic_warning(topic);
        EXPECT_NE(warning.find(std::string("topic ") + topic + " "), std::string::npos) << warning;
        EXPECT_NE(warning.find("Apple accepts the pushes, but iOS Mail ignores them"),
                  std::string::npos)
            << warning;
    }
}

TEST(ApnsPayload, ResponseHeaders) {
    int status = 0;
    std::string apns_id;
    EXPECT_TRUE(xaps::read_apns_response_header(":status", "410", status, apns_id));
    EXPECT_EQ(status, 410);
    EXPECT_TRUE(xaps::read_apns_response_header("apns-id", "EC1BF194-B3B2-424A-89A9-5A918A6E6B5A",
                                                status, apns_id));
    EXPECT_EQ(apns_id, "EC1BF194-B3B2-424A-89A9-5A918A6E6B5A");
    EXPECT_TRUE(xaps::read_apns_response_header("content-type", "text/plain", status, apns_id));
    EXPECT_EQ(status, 410);
    for (const char *bad : {"000", "600", "20", "2000", "2x0"}) {
        EXPECT_FALSE(xaps::read_apns_response_header(":status", bad, status, apns_id)) << bad;
    }
}

TEST(ApnsPayload, ErrorBodies) {
    xaps::ApnsErrorBody gone =
        xaps::parse_apns_error(R"({"reason":"Unregistered","timestamp":1700000000000})");
    EXPECT_EQ(gone.reason, "Unregistered");
    EXPECT_EQ(gone.timestamp_ms, 1700000000000);
    xaps::ApnsErrorBody garbage = xaps::parse_apns_error("not json");
    EXPECT_EQ(garbage.reason, "");
    EXPECT_FALSE(garbage.timestamp_ms);
    xaps::ApnsErrorBody huge = xaps::parse_apns_error(R"({"reason":"X","timestamp":1e300})");
    EXPECT_EQ(huge.reason, "X");
    EXPECT_FALSE(huge.timestamp_ms);
}

} // namespace
