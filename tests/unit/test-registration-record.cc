#include "registration-record.h"
#include "xaps-error.h"

#include <gtest/gtest.h>

#include <string>

namespace {

using xaps::Registration;
using namespace std::string_literals;

Registration iphone() {
    Registration registration;
    registration.user = "Alice";
    registration.account_id = "0715A26B-CA09-4730-A419-793000CA982E";
    registration.device_token = "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";
    registration.subtopic = "com.apple.mobilemail";
    registration.aps_version = 2;
    registration.mailboxes = {"INBOX", "Sent"};
    registration.registered_at = 1700000000;
    registration.last_seen = 1700082800;
    return registration;
}

Registration decoded(const std::string &record) {
    Registration registration;
    xaps::record::decode_into(record, "/db", registration);
    return registration;
}

TEST(RegistrationRecord, AnIphoneRegistrationIsLaidOutAsDocumented) {
    const std::string expected = "\x02"s                 // format 2
                                 "\x02"s                 // aps_version 2
                                 "\xe0\xd1\xa9\xd5\x0c"s // zigzag(1700082800) = 3400165600
                                 "\xf0\x86\x05"s         // last_seen - registered_at = 82800
                                 "\x05"
                                 "Alice"s
                                 "\x11\x01"s // account id: 17 bytes, UUID upper case
                                 "\x07\x15\xa2\x6b\xca\x09\x47\x30\xa4\x19\x79\x30\x00\xca\x98\x2e"s
                                 "\x21\x01"s // token: 33 bytes, lower-case hex
                                 "\x2a\x7e\x5e\x5b\x5d\x6e\x4a\x9c\x8e\x2b\x1f\x9d\x3c\x7a\x6b\x5e"s
                                 "\x4d\x3c\x2b\x1a\x0f\x9e\x8d\x7c\x6b\x5a\x4f\x3e\x2d\x1c\x0b\x9a"s
                                 "\x01\x01"s // subtopic: com.apple.mobilemail
                                 "\x02"s     // two mailboxes
                                 "\x05INBOX\x04Sent"s;
    EXPECT_EQ(xaps::record::encode(iphone()), expected);
    EXPECT_EQ(expected.size(), 82u);
    EXPECT_EQ(decoded(expected), iphone());
}

TEST(RegistrationRecord, CompactFormsKeepOnlyTheBytesOfWellFormedIds) {
    EXPECT_EQ(xaps::record::compact_device_token("00ff"), "\x01\x00\xff"s);
    EXPECT_EQ(xaps::record::compact_device_token("00FF"), "\x00"
                                                          "00FF"s);
    EXPECT_EQ(xaps::record::compact_device_token("abc"), "\x00"
                                                         "abc"s);
    EXPECT_EQ(xaps::record::compact_account_id("0715a26b-ca09-4730-a419-793000ca982e"),
              "\x02\x07\x15\xa2\x6b\xca\x09\x47\x30\xa4\x19\x79\x30\x00\xca\x98\x2e"s);
    // Mixed case, a missing dash, or no UUID at all: kept as they are.
    for (const char *id :
         {"0715A26B-CA09-4730-A419-793000ca982e", "0715A26BCA09-4730-A419-793000CA982E-", "work"}) {
        EXPECT_EQ(xaps::record::compact_account_id(id), "\x00"s + id) << id;
    }
}

TEST(RegistrationRecord, EveryShapeComesBackExactly) {
    std::vector<Registration> shapes;
    for (const char *account :
         {"0715a26b-ca09-4730-a419-793000ca982e", "0715A26B-CA09-4730-A419-793000ca982e", "a"}) {
        for (const char *token : {"00", "0", "ZZ", "aB", "ffffffff"}) {
            for (const char *subtopic : {"", "com.apple.mobilemail", "com.apple.mobilemail2"}) {
                Registration registration = iphone();
                registration.account_id = account;
                registration.device_token = token;
                registration.subtopic = subtopic;
                shapes.push_back(registration);
            }
        }
    }
    Registration odd_times = iphone();
    odd_times.registered_at = INT64_MAX;
    odd_times.last_seen = INT64_MIN;
    odd_times.aps_version = 1;
    odd_times.mailboxes.clear();
    shapes.push_back(odd_times);
    for (const Registration &registration : shapes) {
        SCOPED_TRACE(registration.account_id + " " + registration.device_token + " " +
                     registration.subtopic);
        EXPECT_EQ(decoded(xaps::record::encode(registration)), registration);
    }
}

TEST(RegistrationRecord, MalformedRecordsAreInternalErrorsNamingTheStore) {
    const std::string good = xaps::record::encode(iphone());
    for (const std::string &bad :
         {""s, "\x01"s + good.substr(1), good.substr(0, good.size() - 1), good + "x",
          "\x02\x02\x00\x00\x05"
          "Alice\x03\x07\x01\x02\x00\x00\x00"s}) {
        try {
            decoded(bad);
            ADD_FAILURE() << "decoded a malformed record";
        } catch (const xaps::Error &error) {
            EXPECT_EQ(error.kind(), xaps::ErrorKind::internal);
            EXPECT_NE(std::string(error.what()).find("/db"), std::string::npos) << error.what();
        }
    }
}

TEST(RegistrationRecord, Format1RecordsDecodeUnderTheirKeys) {
    const std::string key = "alice\0acct\0"s
                            "00ff";
    const std::string value = "\x01"s                             // format 1
                              "\x02"s                             // aps_version
                              "\x00\xf1\x53\x65\x00\x00\x00\x00"s // 1700000000 LE
                              "\x70\x34\x55\x65\x00\x00\x00\x00"s // 1700082800 LE
                              "\x03sub"s
                              "\x05"
                              "ALICE"s
                              "\x01\x05INBOX"s;
    Registration registration = xaps::record::decode_format1(key, value, "/db");
    EXPECT_EQ(registration.user, "ALICE");
    EXPECT_EQ(registration.account_id, "acct");
    EXPECT_EQ(registration.device_token, "00ff");
    EXPECT_EQ(registration.subtopic, "sub");
    EXPECT_EQ(registration.aps_version, 2u);
    EXPECT_EQ(registration.registered_at, 1700000000);
    EXPECT_EQ(registration.last_seen, 1700082800);
    EXPECT_EQ(registration.mailboxes, std::vector<std::string>{"INBOX"});
    // An empty spelling is the key's user.
    const std::string plain = value.substr(0, 22) + "\x00\x01\x05INBOX"s;
    EXPECT_EQ(xaps::record::decode_format1(key, plain, "/db").user, "alice");
}

} // namespace
