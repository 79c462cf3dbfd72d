#include "registration-validation.h"
#include "xaps-error.h"

#include <gtest/gtest.h>

#include <string>

namespace {

using xaps::Registration;

Registration valid_registration() {
    Registration registration;
    registration.user = "alice";
    registration.account_id = "acct-1";
    registration.device_token = "aa11";
    registration.subtopic = "com.apple.mobilemail";
    registration.mailboxes = {"INBOX"};
    return registration;
}

TEST(RegistrationValidation, AcceptsFieldsAtTheirLimits) {
    Registration registration = valid_registration();
    registration.user = std::string(160, 'u');
    registration.account_id = std::string(128, 'a');
    registration.device_token = std::string(200, 'f');
    registration.subtopic = std::string(256, 's');
    registration.mailboxes.assign(1000, std::string(1024, 'm'));
    EXPECT_NO_THROW(xaps::validate_registration(registration));
}

struct Breach {
    const char *name;
    void (*spoil)(Registration &);
    const char *message;
};

const Breach breaches[] = {
    {"empty user", [](Registration &r) { r.user.clear(); }, "registration without user"},
    {"long user", [](Registration &r) { r.user.assign(161, 'u'); }, "registration user too long"},
    {"NUL in user", [](Registration &r) { r.user = std::string("al\0ice", 6); },
     "registration user contains a NUL byte"},
    {"empty account", [](Registration &r) { r.account_id.clear(); },
     "registration without account id"},
    {"long account", [](Registration &r) { r.account_id.assign(129, 'a'); },
     "registration account id too long"},
    {"empty token", [](Registration &r) { r.device_token.clear(); },
     "registration without device token"},
    {"long token", [](Registration &r) { r.device_token.assign(201, 'f'); },
     "registration device token too long"},
    {"NUL in token", [](Registration &r) { r.device_token = std::string("aa\0", 3); },
     "registration device token contains a NUL byte"},
    {"long subtopic", [](Registration &r) { r.subtopic.assign(257, 's'); },
     "registration subtopic too long"},
    {"many mailboxes", [](Registration &r) { r.mailboxes.assign(1001, "m"); },
     "registration has too many mailboxes"},
    {"long mailbox", [](Registration &r) { r.mailboxes = {std::string(1025, 'm')}; },
     "registration mailbox name too long"},
};

TEST(RegistrationValidation, RefusesEachBreachWithItsReason) {
    for (const Breach &breach : breaches) {
        SCOPED_TRACE(breach.name);
        Registration registration = valid_registration();
        breach.spoil(registration);
        try {
            xaps::validate_registration(registration);
            ADD_FAILURE() << "accepted";
        } catch (const xaps::Error &error) {
            EXPECT_EQ(error.kind(), xaps::ErrorKind::invalid_input);
            EXPECT_EQ(std::string(error.what()), breach.message);
        }
    }
}

} // namespace
