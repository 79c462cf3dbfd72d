// The shipped configuration as a test machine runs it: includes moved into
// the instance directory, the files installed at the package's places, and
// the overrides a test machine adds, in both syntaxes.
#include "test-machine-overrides.h"

#include "temporary-directory.h"
#include "test-files.h"
#include "xaps-error.h"

#include <filesystem>
#include <gtest/gtest.h>

namespace xaps::test {
namespace {

constexpr DovecotVersion dovecot_2_3{2, 3};
constexpr DovecotVersion dovecot_2_4{2, 4};

TEST(TestMachineOverrides, IncludesOfAbsolutePathsMoveUnderTheRoot) {
    std::vector<std::string> included;
    EXPECT_EQ(includes_moved_under("/tmp/t",
                                   "# !include /etc/commented\n"
                                   "!include_try /usr/share/dovecot-xaps/xaps-enable.conf.ext\n"
                                   "  !include /etc/dovecot/conf.d/x.conf.ext  \n"
                                   "!include conf.d/*.conf\n"
                                   "!includes /not/an/include\n"
                                   "key = value",
                                   &included),
              "# !include /etc/commented\n"
              "!include_try /tmp/t/usr/share/dovecot-xaps/xaps-enable.conf.ext\n"
              "  !include /tmp/t/etc/dovecot/conf.d/x.conf.ext\n"
              "!include conf.d/*.conf\n"
              "!includes /not/an/include\n"
              "key = value");
    EXPECT_EQ(included,
              (std::vector<std::string>{"/usr/share/dovecot-xaps/xaps-enable.conf.ext",
                                        "/etc/dovecot/conf.d/x.conf.ext", "conf.d/*.conf"}));
}

class ShippedFiles : public ::testing::Test {
protected:
    std::string source(const std::string &name, const std::string &text) {
        const std::string path = sources_.path() + "/" + name;
        write_file(path, text);
        return path;
    }

    TemporaryDirectory sources_;
    TemporaryDirectory root_;
};

TEST_F(ShippedFiles, InstalledAtThePackagesPlacesWithThePostinstSlotFile) {
    const std::string conffile =
        source("95-xaps.conf", "!include_try /usr/share/dovecot-xaps/xaps-enable.conf.ext\n"
                               "service xaps {\n"
                               "  user = xaps\n"
                               "}\n");
    const std::string enable_file = source(
        "xaps-enable.conf.ext", "!include_try /etc/dovecot/conf.d/xaps-push-driver.conf.ext\n"
                                "service xaps {\n"
                                "  executable = xaps-worker\n"
                                "}\n");
    const std::string root = root_.path();
    EXPECT_EQ(install_shipped_configuration(root, conffile, enable_file),
              root + "/etc/dovecot/conf.d/95-xaps.conf");
    EXPECT_EQ(read_file(root + "/etc/dovecot/conf.d/95-xaps.conf"),
              "!include_try " + root +
                  "/usr/share/dovecot-xaps/xaps-enable.conf.ext\n"
                  "service xaps {\n"
                  "  user = xaps\n"
                  "}\n");
    EXPECT_EQ(read_file(root + "/usr/share/dovecot-xaps/xaps-enable.conf.ext"),
              "!include_try " + root +
                  "/etc/dovecot/conf.d/xaps-push-driver.conf.ext\n"
                  "service xaps {\n"
                  "  executable = xaps-worker\n"
                  "}\n");
    const std::string slot = read_file(root + "/etc/dovecot/conf.d/xaps-push-driver.conf.ext");
    EXPECT_NE(slot.find("\nplugin {\n"
                        "  push_notification_driver = xaps\n"
                        "}\n"),
              std::string::npos)
        << slot;
}

// Dovecot 2.4's enable file names its driver itself (a named filter), and
// postinst then writes no slot file.
TEST_F(ShippedFiles, NoSlotFileWhenTheEnableFileIncludesNone) {
    const std::string conffile =
        source("95-xaps.conf", "!include_try /usr/share/dovecot-xaps/xaps-enable.conf.ext\n");
    const std::string enable_file = source("xaps-enable.conf.ext", "push_notification xaps {\n"
                                                                   "  driver = xaps\n"
                                                                   "}\n");
    install_shipped_configuration(root_.path(), conffile, enable_file);
    EXPECT_EQ(read_file(root_.path() + "/usr/share/dovecot-xaps/xaps-enable.conf.ext"),
              "push_notification xaps {\n"
              "  driver = xaps\n"
              "}\n");
    EXPECT_FALSE(
        std::filesystem::exists(root_.path() + "/etc/dovecot/conf.d/xaps-push-driver.conf.ext"));
}

TEST_F(ShippedFiles, AnIncludeTheTestMachineDoesNotInstallIsRefused) {
    const std::string enable_file = source("xaps-enable.conf.ext", "");
    const std::string two_includes =
        source("two.conf", "!include_try /usr/share/dovecot-xaps/xaps-enable.conf.ext\n"
                           "!include /etc/dovecot/conf.d/other.conf.ext\n");
    EXPECT_THROW(install_shipped_configuration(root_.path(), two_includes, enable_file), Error);
    const std::string other_name =
        source("other.conf", "!include_try /usr/share/dovecot-xaps/other.conf.ext\n");
    EXPECT_THROW(install_shipped_configuration(root_.path(), other_name, enable_file), Error);
    const std::string conffile =
        source("95-xaps.conf", "!include_try /usr/share/dovecot-xaps/xaps-enable.conf.ext\n");
    const std::string enable_with_other =
        source("xaps-enable.conf.ext", "!include_try /etc/dovecot/conf.d/other.conf.ext\n");
    EXPECT_THROW(install_shipped_configuration(root_.path(), conffile, enable_with_other), Error);
    EXPECT_THROW(
        install_shipped_configuration(root_.path(), sources_.path() + "/missing.conf", enable_file),
        Error);
}

TestMachineOverrides machine() {
    TestMachineOverrides overrides;
    overrides.mail_plugin_dir = "/tmp/t/modules";
    overrides.worker_executable = "/build/xaps-worker";
    overrides.lda_log_path = "/tmp/t/lda.log";
    overrides.apns_port = 8443;
    overrides.apns_ca_file = "/tmp/t/apns/ca.pem";
    overrides.apns_cert_file = "/tmp/t/apns/client.pem";
    overrides.apns_key_file = "/tmp/t/apns/client.key";
    overrides.db_path = "/tmp/t/xaps-db";
    return overrides;
}

TEST(TestMachineOverrides, In2_3Syntax) {
    EXPECT_EQ(test_machine_overrides(machine(), dovecot_2_3),
              "# What this test machine changes in the shipped configuration.\n"
              "# The plugin built in this tree, next to links to Dovecot's own plugins.\n"
              "mail_plugin_dir = /tmp/t/modules\n"
              "protocol lda {\n"
              "  # dovecot-lda runs as the mail user, who cannot write the instance's log.\n"
              "  log_path = /tmp/t/lda.log\n"
              "}\n"
              "service xaps {\n"
              "  # The worker built in this tree, not the installed one.\n"
              "  executable = /build/xaps-worker\n"
              "}\n"
              "plugin {\n"
              "  # The mock APNs, on loopback.\n"
              "  xaps_apns_host = 127.0.0.1\n"
              "  # The mock APNs's free port.\n"
              "  xaps_apns_port = 8443\n"
              "  # The test CA, which signed the mock APNs's certificate.\n"
              "  xaps_apns_ca_file = /tmp/t/apns/ca.pem\n"
              "  # The test PKI's client certificate: credentials are the admin's to add.\n"
              "  xaps_apns_cert_file = /tmp/t/apns/client.pem\n"
              "  # Its key, root's only as 95-xaps.conf asks.\n"
              "  xaps_apns_key_file = /tmp/t/apns/client.key\n"
              "  # The store inside the instance directory, not /var/lib/dovecot-xaps.\n"
              "  xaps_db_path = /tmp/t/xaps-db\n"
              "}\n");
}

TEST(TestMachineOverrides, In2_4SyntaxTheSettingsAreGlobalAndQuoted) {
    const std::string config = test_machine_overrides(machine(), dovecot_2_4);
    EXPECT_NE(config.find("}\n"
                          "# The mock APNs, on loopback.\n"
                          "xaps_apns_host = \"127.0.0.1\"\n"
                          "# The mock APNs's free port.\n"
                          "xaps_apns_port = \"8443\"\n"),
              std::string::npos)
        << config;
    EXPECT_NE(config.find("xaps_db_path = \"/tmp/t/xaps-db\"\n"), std::string::npos) << config;
    EXPECT_EQ(config.find("plugin {"), std::string::npos) << config;
}

TEST(TestMachineOverrides, TheTestsSettingsReplaceRemoveOrEmpty) {
    TestMachineOverrides overrides = machine();
    overrides.test_settings = {{"xaps_apns_cert_file", ""},
                               {"xaps_apns_key_file", "/tmp/t/other.key"},
                               {"push_notification_driver", ""},
                               {"xaps_delay", "10min"}};
    const std::string config_2_3 = test_machine_overrides(overrides, dovecot_2_3);
    EXPECT_EQ(config_2_3.find("xaps_apns_cert_file"), std::string::npos) << config_2_3;
    EXPECT_EQ(config_2_3.find("/tmp/t/apns/client.key"), std::string::npos) << config_2_3;
    EXPECT_NE(config_2_3.find("  # The store inside the instance directory, not "
                              "/var/lib/dovecot-xaps.\n"
                              "  xaps_db_path = /tmp/t/xaps-db\n"
                              "  # The test's own (DovecotOptions::plugin_settings): emptied, as "
                              "by a later file.\n"
                              "  push_notification_driver =\n"
                              "  # The test's own (DovecotOptions::plugin_settings).\n"
                              "  xaps_apns_key_file = /tmp/t/other.key\n"
                              "  # The test's own (DovecotOptions::plugin_settings).\n"
                              "  xaps_delay = 10min\n"
                              "}\n"),
              std::string::npos)
        << config_2_3;
    const std::string config_2_4 = test_machine_overrides(overrides, dovecot_2_4);
    EXPECT_NE(config_2_4.find("\npush_notification_driver = \"\"\n"), std::string::npos)
        << config_2_4;
    EXPECT_NE(config_2_4.find("\nxaps_delay = \"10min\"\n"), std::string::npos) << config_2_4;
}

TEST(TestMachineOverrides, WithoutWorkerTheServiceIsSwitchedOff) {
    TestMachineOverrides overrides = machine();
    overrides.worker_executable.clear();
    const std::string config = test_machine_overrides(overrides, dovecot_2_3);
    EXPECT_NE(config.find("service xaps {\n"
                          "  # The test runs without the worker (DovecotOptions::enable_worker): "
                          "Dovecot\n"
                          "  # starts a service only when `protocols` lists the service's "
                          "protocol.\n"
                          "  protocol = none\n"
                          "}\n"),
              std::string::npos)
        << config;
    EXPECT_EQ(config.find("executable"), std::string::npos) << config;
}

TEST(TestMachineOverrides, WithoutPluginThePluginListsAreTakenAway) {
    TestMachineOverrides overrides = machine();
    overrides.plugin_enabled = false;
    const std::string config_2_3 = test_machine_overrides(overrides, dovecot_2_3);
    for (const char *protocol : {"imap", "lmtp", "lda"}) {
        EXPECT_NE(config_2_3.find(std::string("protocol ") + protocol +
                                  " {\n"
                                  "  mail_plugins =\n"
                                  "}\n"),
                  std::string::npos)
            << config_2_3;
    }
    const std::string config_2_4 = test_machine_overrides(overrides, dovecot_2_4);
    EXPECT_NE(config_2_4.find("protocol lmtp {\n"
                              "  mail_plugins {\n"
                              "    notify = no\n"
                              "    push_notification = no\n"
                              "    xaps = no\n"
                              "  }\n"
                              "}\n"),
              std::string::npos)
        << config_2_4;
}

TEST(TestMachineOverrides, SanitizerRunsGetAnUnlimitedAddressSpaceOn2_3) {
    TestMachineOverrides overrides = machine();
    overrides.sanitizer = true;
    const std::string config_2_3 = test_machine_overrides(overrides, dovecot_2_3);
    EXPECT_NE(config_2_3.find("\nimport_environment = TZ CORE_OUTOFMEM CORE_ERROR LD_PRELOAD "
                              "ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS\n"),
              std::string::npos)
        << config_2_3;
    EXPECT_NE(config_2_3.find("\ndefault_vsz_limit = 0\n"), std::string::npos) << config_2_3;
    EXPECT_NE(config_2_3.find("\n  vsz_limit = 0\n}\n"), std::string::npos) << config_2_3;
    const std::string without = test_machine_overrides(machine(), dovecot_2_3);
    EXPECT_EQ(without.find("vsz_limit"), std::string::npos) << without;
    EXPECT_EQ(without.find("import_environment"), std::string::npos) << without;
}

} // namespace
} // namespace xaps::test
