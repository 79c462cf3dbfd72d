// The Dovecot configuration the end-to-end and package tests write, in both
// syntaxes, whatever Dovecot this machine has installed.
#include "dovecot-config.h"

#include "xaps-error.h"

#include <gtest/gtest.h>

namespace xaps::test {
namespace {

constexpr DovecotVersion dovecot_2_3{2, 3};
constexpr DovecotVersion dovecot_2_4{2, 4};

TestMachine machine() {
    TestMachine machine;
    machine.dir = "/tmp/t";
    machine.base_dir = "/tmp/t/run";
    machine.log_path = "/tmp/t/dovecot.log";
    machine.instance_name = "xaps-test-1";
    machine.mail_user = SystemUser{"vmail", 120, 130};
    machine.imap_port = 10143;
    machine.lmtp_port = 10024;
    return machine;
}

TEST(DovecotConfig, OwnConfigurationIn2_3Syntax) {
    TestMachine own = machine();
    own.userdb_fields = "xaps_push_user=%Uu quota=1G";
    own.lmtp_socket_mode = "0666";
    EXPECT_EQ(test_machine_config(own, dovecot_2_3), "base_dir = /tmp/t/run\n"
                                                     "state_dir = /tmp/t/state\n"
                                                     "log_path = /tmp/t/dovecot.log\n"
                                                     "instance_name = xaps-test-1\n"
                                                     "protocols = imap lmtp\n"
                                                     "listen = 127.0.0.1\n"
                                                     "ssl = no\n"
                                                     "first_valid_uid = 120\n"
                                                     "postmaster_address = postmaster@example.com\n"
                                                     "disable_plaintext_auth = no\n"
                                                     "auth_username_format = %Ln\n"
                                                     "mail_location = maildir:/tmp/t/mail/%u\n"
                                                     "passdb {\n"
                                                     "  driver = passwd-file\n"
                                                     "  args = /tmp/t/users\n"
                                                     "}\n"
                                                     "userdb {\n"
                                                     "  driver = static\n"
                                                     "  args = uid=120 gid=130 home=/tmp/t/home/%u "
                                                     "xaps_push_user=%Uu quota=1G\n"
                                                     "}\n"
                                                     "service imap-login {\n"
                                                     "  inet_listener imap {\n"
                                                     "    address = 127.0.0.1\n"
                                                     "    port = 10143\n"
                                                     "  }\n"
                                                     "  inet_listener imaps {\n"
                                                     "    port = 0\n"
                                                     "  }\n"
                                                     "}\n"
                                                     "service lmtp {\n"
                                                     "  inet_listener lmtp {\n"
                                                     "    address = 127.0.0.1\n"
                                                     "    port = 10024\n"
                                                     "  }\n"
                                                     "  unix_listener lmtp {\n"
                                                     "    mode = 0666\n"
                                                     "  }\n"
                                                     "}\n");
}

TEST(DovecotConfig, OwnConfigurationIn2_4Syntax) {
    TestMachine own = machine();
    own.userdb_fields = "xaps_push_user=%{user} note=a\"b";
    EXPECT_EQ(test_machine_config(own, dovecot_2_4),
              "base_dir = /tmp/t/run\n"
              "state_dir = /tmp/t/state\n"
              "log_path = /tmp/t/dovecot.log\n"
              "instance_name = xaps-test-1\n"
              "protocols = imap lmtp\n"
              "listen = 127.0.0.1\n"
              "ssl = no\n"
              "first_valid_uid = 120\n"
              "postmaster_address = postmaster@example.com\n"
              "auth_allow_cleartext = yes\n"
              "auth_username_format = %{user | username | lower}\n"
              "mail_driver = maildir\n"
              "mail_path = /tmp/t/mail/%{user}\n"
              "passdb passwd-file {\n"
              "  passwd_file_path = /tmp/t/users\n"
              "}\n"
              "userdb static {\n"
              "  fields {\n"
              "    uid = 120\n"
              "    gid = 130\n"
              "    home = /tmp/t/home/%{user}\n"
              "    xaps_push_user = \"%{user}\"\n"
              "    note = \"a\\\"b\"\n"
              "  }\n"
              "}\n"
              "service imap-login {\n"
              "  inet_listener imap {\n"
              "    port = 10143\n"
              "  }\n"
              "  inet_listener imaps {\n"
              "    port = 0\n"
              "  }\n"
              "}\n"
              "service lmtp {\n"
              "  inet_listener lmtp {\n"
              "    port = 10024\n"
              "  }\n"
              "}\n");
}

TEST(DovecotConfig, AfterAnInstalledConfigurationAlsoTakesBackLogsAndMailPaths) {
    TestMachine after = machine();
    after.after_installed_config = true;
    const std::string config_2_3 = test_machine_config(after, dovecot_2_3);
    const std::string config_2_4 = test_machine_config(after, dovecot_2_4);
    for (const std::string &config : {config_2_3, config_2_4}) {
        EXPECT_NE(config.find("log_path = /tmp/t/dovecot.log\n"
                              "info_log_path = /tmp/t/dovecot.log\n"
                              "debug_log_path = /tmp/t/dovecot.log\n"),
                  std::string::npos)
            << config;
        EXPECT_EQ(config.find("unix_listener"), std::string::npos) << config;
    }
    EXPECT_NE(config_2_4.find("mail_driver = maildir\n"
                              "mail_home = /tmp/t/home/%{user}\n"
                              "mail_path = /tmp/t/mail/%{user}\n"
                              "mail_inbox_path =\n"),
              std::string::npos)
        << config_2_4;
    EXPECT_EQ(config_2_3.find("mail_home"), std::string::npos) << config_2_3;
    EXPECT_EQ(config_2_3.find("mail_inbox_path"), std::string::npos) << config_2_3;
}

TEST(DovecotConfig, SystemUsersComeFromThePasswordFileWithTheirOwnUids) {
    TestMachine accounts = machine();
    accounts.users = {"alice", "bob"};
    accounts.user_accounts = {{"alice", SystemUser{"xaps-test-alice", 101, 111}},
                              {"bob", SystemUser{"xaps-test-bob", 102, 112}}};
    accounts.userdb_fields = "xaps_push_user=%Uu";
    const std::string config_2_3 = test_machine_config(accounts, dovecot_2_3);
    EXPECT_NE(config_2_3.find("first_valid_uid = 101\n"), std::string::npos) << config_2_3;
    EXPECT_NE(config_2_3.find("userdb {\n"
                              "  driver = passwd-file\n"
                              "  args = /tmp/t/users\n"
                              "  default_fields = xaps_push_user=%Uu\n"
                              "}\n"),
              std::string::npos)
        << config_2_3;
    const std::string config_2_4 = test_machine_config(accounts, dovecot_2_4);
    EXPECT_NE(config_2_4.find("first_valid_uid = 101\n"), std::string::npos) << config_2_4;
    EXPECT_NE(config_2_4.find("userdb passwd-file {\n"
                              "  passwd_file_path = /tmp/t/users\n"
                              "  fields {\n"
                              "    xaps_push_user = \"%Uu\"\n"
                              "  }\n"
                              "}\n"),
              std::string::npos)
        << config_2_4;
}

TEST(DovecotConfig, UserdbFieldsMustBeKeyValueIn2_4) {
    TestMachine bad = machine();
    bad.userdb_fields = "=value";
    EXPECT_THROW(test_machine_config(bad, dovecot_2_4), Error);
    bad.userdb_fields = "novalue";
    EXPECT_THROW(test_machine_config(bad, dovecot_2_4), Error);
}

TEST(DovecotConfig, XapsSettingsInPluginBlockOrGlobal) {
    const std::map<std::string, std::string> settings = {{"xaps_apns_port", "8443"},
                                                         {"xaps_db_path", "/tmp/t/xaps-db"}};
    EXPECT_EQ(xaps_settings_config(settings, dovecot_2_3), "plugin {\n"
                                                           "  xaps_apns_port = 8443\n"
                                                           "  xaps_db_path = /tmp/t/xaps-db\n"
                                                           "}\n");
    EXPECT_EQ(xaps_settings_config(settings, dovecot_2_4), "xaps_apns_port = \"8443\"\n"
                                                           "xaps_db_path = \"/tmp/t/xaps-db\"\n");
}

TEST(DovecotConfig, QuotedValueEscapesQuotesAndBackslashes) {
    EXPECT_EQ(config_2_4_quoted(R"(a"b\c)"), R"("a\"b\\c")");
    EXPECT_EQ(config_2_4_quoted(""), R"("")");
}

TEST(DovecotConfig, VersionComparison) {
    EXPECT_TRUE((DovecotVersion{2, 4}).at_least(2, 3));
    EXPECT_TRUE((DovecotVersion{2, 3}).at_least(2, 3));
    EXPECT_FALSE((DovecotVersion{2, 3}).at_least(2, 4));
    EXPECT_TRUE((DovecotVersion{3, 0}).at_least(2, 4));
}

} // namespace
} // namespace xaps::test
