#include "xaps-settings.h"

#include "xaps-error.h"

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

TEST(XapsSettings, DefaultsMatchTheDesign) {
    auto s = read({});
    EXPECT_EQ(s.socket_path, "xaps");
    EXPECT_EQ(s.admin_socket_path, "xaps-admin");
    EXPECT_EQ(s.db_path, "/var/lib/dovecot-xaps");
    EXPECT_EQ(s.db_max_size, 17179869184U); // 16 GiB
    EXPECT_EQ(s.apns_host, "api.push.apple.com");
    EXPECT_EQ(s.apns_port, 443);
    EXPECT_EQ(s.apns_push_type, "background");
    EXPECT_FALSE(s.apns_priority.has_value());
    EXPECT_EQ(s.apns_expiration, 24h);
    EXPECT_EQ(s.delay, 30s);
    EXPECT_EQ(s.registration_ttl, 720h);
    EXPECT_EQ(s.max_devices_per_user, 16U);
    EXPECT_EQ(s.apns_connections, 1U);
    EXPECT_EQ(s.subtopics, std::vector<std::string>{"com.apple.mobilemail"});
    EXPECT_EQ(s.credential_kind(), xaps::CredentialKind::none);
}

TEST(XapsSettings, ReadsEveryKind) {
    auto s = read({{"xaps_apns_host", "127.0.0.1"},
                   {"xaps_apns_port", "8443"},
                   {"xaps_apns_cert_file", "/etc/xaps/cert.pem"},
                   {"xaps_apns_priority", "5"},
                   {"xaps_apns_expiration", "1h"},
                   {"xaps_delay", "250ms"},
                   {"xaps_registration_ttl", "7d"},
                   {"xaps_max_devices_per_user", "3"},
                   {"xaps_subtopics", "com.apple.mobilemail, com.example.other"},
                   {"xaps_socket_path", "/run/xaps.sock"}});
    EXPECT_EQ(s.apns_host, "127.0.0.1");
    EXPECT_EQ(s.apns_port, 8443);
    EXPECT_EQ(s.apns_key_file, "/etc/xaps/cert.pem") << "a PEM holding cert and key";
    EXPECT_EQ(s.apns_priority, 5);
    EXPECT_EQ(s.apns_expiration, 1h);
    EXPECT_EQ(s.delay, 250ms);
    EXPECT_EQ(s.registration_ttl, 168h);
    EXPECT_EQ(s.max_devices_per_user, 3U);
    EXPECT_EQ(s.subtopics, (std::vector<std::string>{"com.apple.mobilemail", "com.example.other"}));
    EXPECT_EQ(s.credential_kind(), xaps::CredentialKind::pem);
    EXPECT_EQ(xaps::resolve_socket_path(s.socket_path, "/run/dovecot"), "/run/xaps.sock");
    EXPECT_EQ(xaps::resolve_socket_path(read({}).socket_path, "/run/dovecot"), "/run/dovecot/xaps");
    EXPECT_EQ(xaps::resolve_socket_path(read({}).admin_socket_path, "/run/dovecot"),
              "/run/dovecot/xaps-admin");
}

TEST(XapsSettings, DefaultsAreWhatAnEmptyConfigurationReads) {
    auto s = xaps::default_xaps_settings();
    EXPECT_EQ(s.socket_path, "xaps");
    EXPECT_EQ(s.admin_socket_path, "xaps-admin");
    EXPECT_EQ(s.user_lookup, "");
    EXPECT_EQ(s.apns_port, 443);
    EXPECT_EQ(s.apns_ca_file, "");
    EXPECT_EQ(s.apns_key_file, "");
    EXPECT_EQ(s.delay, 30s);
    EXPECT_EQ(s.registration_ttl, 720h);
    EXPECT_EQ(s.caservice_url, "");
}

TEST(XapsSettings, DurationsAreCheckedInTheirUnit) {
    // Kept in seconds: 500ms is 0, which a registration TTL must not be.
    try {
        read({{"xaps_registration_ttl", "500ms"}});
        ADD_FAILURE() << "accepted";
    } catch (const xaps::Error &e) {
        EXPECT_STREQ(e.what(), "xaps_registration_ttl: must be more than 0");
    }
    EXPECT_EQ(read({{"xaps_delay", "0"}}).delay, 0ms);
}

TEST(XapsSettings, NumberErrorShowsTheRange) {
    try {
        read({{"xaps_apns_connections", "65"}});
        ADD_FAILURE() << "accepted";
    } catch (const xaps::Error &e) {
        EXPECT_STREQ(e.what(), "xaps_apns_connections: '65' is not a number from 1 to 64");
    }
}

// As Dovecot reads sizes (vsz_limit = 256M): powers of 1024.
TEST(XapsSettings, SizesInDovecotsUnits) {
    const std::pair<const char *, std::uint64_t> cases[] = {
        {"1048576", 1048576U},  {"2048k", 2097152U},      {"2048K", 2097152U},
        {"256M", 268435456U},   {"256m", 268435456U},     {"256 MB", 268435456U},
        {"256MiB", 268435456U}, {"4G", 4294967296U},      {"4gb", 4294967296U},
        {"1T", 1099511627776U}, {"16T", 17592186044416U}, {"3145728B", 3145728U},
    };
    for (const auto &[text, bytes] : cases) {
        SCOPED_TRACE(text);
        EXPECT_EQ(read({{"xaps_db_max_size", text}}).db_max_size, bytes);
    }
}

TEST(XapsSettings, SizeErrorShowsTheRange) {
    for (const char *text : {"1023k", "17T", "4Q", "4GBB", "18446744073709551615G"}) {
        SCOPED_TRACE(text);
        try {
            read({{"xaps_db_max_size", text}});
            ADD_FAILURE() << "accepted";
        } catch (const xaps::Error &e) {
            EXPECT_EQ(e.what(), "xaps_db_max_size: '" + std::string(text) +
                                    "' is not a size (use e.g. 512M, 4G) from 1048576 to "
                                    "17592186044416 bytes");
        }
    }
}

TEST(XapsSettings, EmptyValueMeansDefault) {
    EXPECT_EQ(read({{"xaps_apns_host", ""}}).apns_host, "api.push.apple.com");
}

TEST(XapsSettings, CredentialPreference) {
    EXPECT_EQ(read({{"xaps_apns_p12_file", "a.p12"}}).credential_kind(),
              xaps::CredentialKind::pkcs12);
    EXPECT_EQ(read({{"xaps_apns_token_key_file", "k.p8"}}).credential_kind(),
              xaps::CredentialKind::token);
    EXPECT_EQ(read({{"xaps_apple_id", "me@example.org"}}).credential_kind(),
              xaps::CredentialKind::apple_id);
}

TEST(XapsSettings, BadValuesNameTheSetting) {
    const std::pair<const char *, const char *> cases[] = {
        {"xaps_apns_port", "0"},        {"xaps_apns_port", "65536"},
        {"xaps_apns_port", "https"},    {"xaps_apns_priority", "11"},
        {"xaps_apns_priority", "7"},    {"xaps_delay", "soon"},
        {"xaps_registration_ttl", "0"}, {"xaps_max_devices_per_user", "-1"},
        {"xaps_apns_connections", "0"}, {"xaps_db_max_size", "512k"},
        {"xaps_db_max_size", "4X"},     {"xaps_db_max_size", "-4G"},
        {"xaps_db_max_size", "G"},
    };
    for (const auto &[name, value] : cases) {
        SCOPED_TRACE(std::string(name) + "=" + value);
        try {
            read({{name, value}});
            ADD_FAILURE() << "accepted";
        } catch (const xaps::Error &e) {
            EXPECT_EQ(e.kind(), xaps::ErrorKind::config);
            EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
        }
    }
}

TEST(XapsSettings, BooleansAreYesOrNo) {
    EXPECT_TRUE(read({}).push_mailbox_hashes) << "xaps_push_mailbox_hashes defaults to yes";
    EXPECT_FALSE(read({{"xaps_push_mailbox_hashes", "no"}}).push_mailbox_hashes);
    EXPECT_FALSE(read({{"xaps_push_mailbox_hashes", "NO"}}).push_mailbox_hashes);
    EXPECT_TRUE(read({{"xaps_push_mailbox_hashes", "yes"}}).push_mailbox_hashes);
    for (const char *bad : {"off", "0", "true", "yess", " no"}) {
        SCOPED_TRACE(bad);
        try {
            read({{"xaps_push_mailbox_hashes", bad}});
            ADD_FAILURE() << "accepted";
        } catch (const xaps::Error &e) {
            EXPECT_EQ(e.kind(), xaps::ErrorKind::config);
            EXPECT_NE(std::string(e.what()).find("xaps_push_mailbox_hashes"), std::string::npos)
                << e.what();
        }
    }
}

} // namespace

// Dovecot's `key = <file` keeps the file's line break.
TEST(XapsSettings, SecretsReadFromAFileLoseTheirLineBreak) {
    auto s =
        read({{"xaps_apns_p12_password", "s3cret\n"}, {"xaps_apple_password_hash", "ab12\r\n"}});
    EXPECT_EQ(s.apns_p12_password, "s3cret");
    EXPECT_EQ(s.apple_password_hash, "ab12");
    EXPECT_EQ(read({{"xaps_apns_p12_password", "two\n\n"}}).apns_p12_password, "two\n")
        << "only the one line break a file ends with";
}
