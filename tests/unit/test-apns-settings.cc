#include "apns-settings.h"

#include <gtest/gtest.h>

#include <map>

using namespace std::chrono_literals;

namespace {

xaps::XapsSettings read(const std::map<std::string, std::string, std::less<>> &values) {
    return xaps::read_xaps_settings([&](std::string_view name) -> std::optional<std::string> {
        auto it = values.find(name);
        return it == values.end() ? std::nullopt : std::optional<std::string>(it->second);
    });
}

TEST(ApnsSettings, TakesTheConnectionAndHeaderSettings) {
    auto apns = xaps::ApnsSettings::from(read({{"xaps_apns_host", "127.0.0.1"},
                                               {"xaps_apns_port", "8443"},
                                               {"xaps_apns_ca_file", "/etc/xaps/ca.pem"},
                                               {"xaps_apns_push_type", "alert"},
                                               {"xaps_apns_priority", "5"},
                                               {"xaps_apns_expiration", "1h"},
                                               {"xaps_apns_connections", "4"}}));
    EXPECT_EQ(apns.host, "127.0.0.1");
    EXPECT_EQ(apns.port, 8443);
    EXPECT_EQ(apns.ca_file, "/etc/xaps/ca.pem");
    EXPECT_EQ(apns.push_type, "alert");
    EXPECT_EQ(apns.priority, 5);
    EXPECT_EQ(apns.expiration, 1h);
    EXPECT_EQ(apns.connections, 4U);
}

TEST(ApnsSettings, DefaultsComeFromTheSettings) {
    auto apns = xaps::ApnsSettings::from(xaps::default_xaps_settings());
    EXPECT_EQ(apns.host, "api.push.apple.com");
    EXPECT_EQ(apns.port, 443);
    EXPECT_EQ(apns.push_type, "background");
    EXPECT_FALSE(apns.priority.has_value());
    EXPECT_EQ(apns.expiration, 24h);
    EXPECT_EQ(apns.connections, 1U);
}

// With several credentials configured only the preferred one is passed on.
TEST(ApnsSettings, OnlyTheChosenCredential) {
    const std::map<std::string, std::string, std::less<>> all = {
        {"xaps_apns_cert_file", "/c.pem"},     {"xaps_apns_key_file", "/c.key"},
        {"xaps_apns_p12_file", "/c.p12"},      {"xaps_apns_p12_password", "secret"},
        {"xaps_apns_token_key_file", "/k.p8"}, {"xaps_apns_key_id", "KEY"},
        {"xaps_apns_team_id", "TEAM"},         {"xaps_apns_topic", "com.example"},
    };
    auto pem = xaps::ApnsSettings::from(read(all));
    EXPECT_EQ(pem.cert_file, "/c.pem");
    EXPECT_EQ(pem.key_file, "/c.key");
    EXPECT_EQ(pem.p12_file, "");
    EXPECT_EQ(pem.token_key_file, "");

    auto without_pem = all;
    without_pem.erase("xaps_apns_cert_file");
    without_pem.erase("xaps_apns_key_file");
    auto pkcs12 = xaps::ApnsSettings::from(read(without_pem));
    EXPECT_EQ(pkcs12.cert_file, "");
    EXPECT_EQ(pkcs12.p12_file, "/c.p12");
    EXPECT_EQ(pkcs12.p12_password, "secret");
    EXPECT_EQ(pkcs12.token_key_file, "");

    auto token_only = without_pem;
    token_only.erase("xaps_apns_p12_file");
    auto token = xaps::ApnsSettings::from(read(token_only));
    EXPECT_EQ(token.p12_file, "");
    EXPECT_EQ(token.p12_password, "");
    EXPECT_EQ(token.token_key_file, "/k.p8");
    EXPECT_EQ(token.key_id, "KEY");
    EXPECT_EQ(token.team_id, "TEAM");
    EXPECT_EQ(token.topic, "com.example");

    auto apple_id = xaps::ApnsSettings::from(read({{"xaps_apple_id", "me@example.org"}}));
    EXPECT_EQ(apple_id.cert_file, "");
    EXPECT_EQ(apple_id.token_key_file, "");
}

} // namespace
