// The installed dovecot-xaps package, end to end: the files the package put
// on this machine (plugin, worker, doveadm module, conffile), run by the
// installed Dovecot from a copy of /etc/dovecot (see installed-dovecot.h),
// with the mock APNs server in this process. scripts/package-test.sh builds
// the .deb, installs it, runs this suite and purges the package; without the
// package installed every case skips.
#include "installed-dovecot.h"
#include "dovecot-config.h"
#include "test-files.h"

#include "imap-client.h"
#include "lmtp-client.h"
#include "mock-apns-server.h"
#include "test-pki.h"
#include "worker-client.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <memory>
#include <pwd.h>
#include <regex>
#include <sys/stat.h>
#include <unistd.h>

#ifndef XAPS_TEST_PKI_DIR
#error "meson must define XAPS_TEST_PKI_DIR"
#endif

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char *module_dir = "/usr/lib/dovecot/modules";
constexpr const char *state_dir = "/var/lib/dovecot-xaps";
constexpr const char *capability = "XAPPLEPUSHSERVICE";
// What an iPhone sends: iOS's account UUID (upper case) and a device token in hex.
constexpr const char *account_id = "0715A26B-CA09-4730-A419-793000CA982E";
constexpr const char *device_token =
    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";
// What the admin is told to set, named in the one log line about it.
constexpr const char *credential_setting = "xaps_apns_cert_file";
constexpr auto push_timeout = 10s;
// The p12 bundle's password (tests/pki/make-test-pki.sh).
constexpr const char *p12_password = "test";
// Written by scripts/package-test.sh before it installs the package: a Lua
// push_notification driver, as an admin may already run one, that appends
// "<event> <mailbox>" to <home>-lua-push-events.
constexpr const char *lua_driver_conf = "/etc/dovecot/conf.d/90-xaps-package-test-lua.conf";
constexpr const char *lua_push_events = "-lua-push-events";

std::string joined(const std::vector<std::string> &lines) {
    std::string text;
    for (const auto &line : lines) {
        text += line + "\n";
    }
    return text;
}

std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// The files /usr/lib/dovecot/modules/<dir> holds whose name matches `pattern`.
std::vector<std::string> modules_matching(const std::string &dir, const std::regex &pattern) {
    std::vector<std::string> found;
    for (const auto &entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename();
        if (std::regex_match(name, pattern)) {
            found.push_back(name);
        }
    }
    return found;
}

class InstalledPackage : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(installed_worker)) {
            GTEST_SKIP() << "the dovecot-xaps package is not installed (no " << installed_worker
                         << "); scripts/package-test.sh builds, installs and tests it";
        }
        if (::geteuid() != 0) {
            GTEST_SKIP() << "the package test runs Dovecot: it needs root";
        }
        dovecot_ = std::make_unique<InstalledDovecot>();
    }

    void TearDown() override {
        if (!dovecot_ || !dovecot_->running()) {
            return;
        }
        // Stopping first lets a crash during shutdown show up in the log too.
        dovecot_->stop();
        expect_clean_log();
    }

    // The phone's XAPPLEPUSHSERVICE for INBOX; fails the test unless OK.
    ImapResponse register_iphone(ImapClient &imap) {
        ImapResponse reply = imap.command(
            std::string("XAPPLEPUSHSERVICE \"aps-version\" \"2\" \"aps-account-id\" \"") +
            account_id + "\" \"aps-device-token\" \"" + device_token +
            "\" \"aps-subtopic\" \"com.apple.mobilemail\" \"mailboxes\" (\"INBOX\")");
        EXPECT_TRUE(reply.ok()) << joined(reply.lines()) << "\nDovecot's log:\n" << dovecot_->log();
        return reply;
    }

    void use_mock_apns(const MockApnsServer &apns) {
        dovecot_->set_plugin_settings(dovecot_->mock_apns_settings(apns.port()));
    }

    // No error of any kind: a missing credential is a setting the admin has
    // not made yet, not a fault.
    void expect_clean_log() {
        EXPECT_EQ(joined(dovecot_->log_errors()), "") << "Dovecot's log:\n" << dovecot_->log();
    }

    void expect_worker_runs_as_xaps() {
        const passwd *xaps = ::getpwnam("xaps");
        ASSERT_NE(xaps, nullptr);
        const uid_t xaps_uid = xaps->pw_uid;
        std::optional<ServiceProcess> worker = dovecot_->service_process(installed_worker);
        ASSERT_TRUE(worker.has_value()) << "no child of the master runs " << installed_worker;
        ASSERT_EQ(worker->uids.size(), 4u);
        for (uid_t uid : worker->uids) {
            EXPECT_EQ(uid, xaps_uid)
                << "real, effective, saved and filesystem uid of pid " << worker->pid;
        }
    }

    std::unique_ptr<ImapClient> login(const std::string &user = "alice") {
        auto imap = std::make_unique<ImapClient>(dovecot_->imap_port());
        ImapResponse reply = imap->login(user, InstalledDovecot::password);
        EXPECT_TRUE(reply.ok()) << reply.tagged << "\nDovecot's log:\n" << dovecot_->log();
        return imap;
    }

    SmtpReply deliver_to(const std::string &rcpt) {
        LmtpClient lmtp(dovecot_->lmtp_port());
        return lmtp.deliver("sender@example.net", rcpt,
                            make_test_message("sender@example.net", rcpt, "Hello",
                                              "A mail that should wake up the phone.\n"));
    }

    // STATUS INBOX (MESSAGES), the number.
    std::string inbox_messages(ImapClient &imap) {
        ImapResponse reply = imap.command("STATUS INBOX (MESSAGES)");
        EXPECT_TRUE(reply.ok()) << reply.tagged;
        std::smatch match;
        const std::regex count(R"(^\* STATUS "?INBOX"? \(MESSAGES (\d+)\)$)");
        for (const auto &line : reply.untagged) {
            if (std::regex_match(line, match, count)) {
                return match[1];
            }
        }
        return "<no STATUS line: " + joined(reply.lines()) + ">";
    }

    std::unique_ptr<InstalledDovecot> dovecot_;
};

TEST_F(InstalledPackage, PutItsFilesWhereTheContractSays) {
    struct Row {
        std::string path;
        mode_t type;
    };
    const std::vector<Row> rows = {
        {installed_worker, S_IFREG},
        {"/etc/dovecot/conf.d/95-xaps.conf", S_IFREG},
        {"/usr/share/dovecot-xaps/xaps-enable.conf.ext", S_IFREG},
        {state_dir, S_IFDIR},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.path);
        struct stat st {};
        ASSERT_EQ(::stat(row.path.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & S_IFMT, row.type);
    }
    EXPECT_EQ(::access(installed_worker, X_OK), 0);

    // lib<NN>_..., NN above 20: loaded after notify (15) and push_notification (20).
    const std::regex plugin(R"(lib(\d+)_xaps_plugin\.so)");
    const std::regex doveadm_plugin(R"(lib(\d+)_doveadm_xaps_plugin\.so)");
    for (const auto &[dir, pattern] :
         {std::pair{std::string(module_dir), plugin},
          std::pair{std::string(module_dir) + "/doveadm", doveadm_plugin}}) {
        SCOPED_TRACE(dir);
        const std::vector<std::string> found = modules_matching(dir, pattern);
        ASSERT_EQ(found.size(), 1u) << joined(found);
        EXPECT_GT(std::stoi(found[0].substr(3)), 20) << found[0];
    }
}

// What dpkg-query prints for the installed package's `field`.
std::string installed_package_field(const std::string &field) {
    const std::string command = "dpkg-query -W -f '${" + field + "}' dovecot-xaps";
    std::FILE *pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        return {};
    }
    std::string output;
    char buffer[512];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) {
        output.append(buffer, n);
    }
    ::pclose(pipe);
    return output;
}

// The shared store's module sits next to the worker, which loads it from
// there; libpq5 is needed only when xaps_shared_store is set, so the package
// suggests it rather than depending on it.
TEST_F(InstalledPackage, ShipsTheSharedStoreModuleAndOnlySuggestsLibpq) {
    const std::string module =
        std::filesystem::path(installed_worker).parent_path() / "xaps-store-pgsql.so";
    EXPECT_EQ(::access(module.c_str(), R_OK), 0) << module;
    const std::string depends = installed_package_field("Depends");
    // The libraries of the rest of the package are still dependencies.
    EXPECT_NE(depends.find("libc6"), std::string::npos) << depends;
    EXPECT_NE(depends.find("liblmdb0"), std::string::npos) << depends;
    EXPECT_EQ(depends.find("libpq"), std::string::npos) << depends;
    EXPECT_NE(installed_package_field("Suggests").find("libpq5"), std::string::npos);
}

TEST_F(InstalledPackage, PostinstCreatedTheWorkerUserAndItsPrivateStore) {
    const passwd *user = ::getpwnam("xaps");
    ASSERT_NE(user, nullptr) << "no user xaps";
    const uid_t uid = user->pw_uid;
    EXPECT_LT(uid, 1000u) << "a system user";
    const group *xaps_group = ::getgrnam("xaps");
    ASSERT_NE(xaps_group, nullptr) << "no group xaps";

    struct stat st {};
    ASSERT_EQ(::stat(state_dir, &st), 0) << state_dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u) << std::oct << (st.st_mode & 07777);
    EXPECT_EQ(st.st_uid, uid);
    EXPECT_EQ(st.st_gid, xaps_group->gr_gid);
}

// The package installed, nothing configured: Dovecot serves mail as before,
// offers no push, and tells the admin in one line what to set.
TEST_F(InstalledPackage, WithoutCredentialServesMailWithoutPushAndSaysWhatToConfigure) {
    // The copy runs the package's conffile exactly as installed.
    EXPECT_EQ(read_file(dovecot_->config_dir() + "/conf.d/95-xaps.conf"),
              read_file("/etc/dovecot/conf.d/95-xaps.conf"));
    ASSERT_NO_THROW(dovecot_->start());
    expect_worker_runs_as_xaps();

    auto imap = login();
    EXPECT_EQ(imap->capabilities().count(capability), 0u);
    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    EXPECT_EQ(inbox_messages(*imap), "1");
    EXPECT_TRUE(imap->command("LOGOUT").ok());

    // Another session (another imap process): still no push, still one line.
    auto again = login();
    EXPECT_EQ(again->capabilities().count(capability), 0u);
    EXPECT_EQ(inbox_messages(*again), "1");
    EXPECT_TRUE(again->command("LOGOUT").ok());

    dovecot_->stop();
    std::vector<std::string> advice;
    for (const auto &line : dovecot_->log_lines()) {
        if (line.find(credential_setting) != std::string::npos) {
            advice.push_back(line);
        }
    }
    ASSERT_EQ(advice.size(), 1u) << "one line saying what to configure, not one per process:\n"
                                 << joined(advice);
    EXPECT_NE(advice[0].find("95-xaps.conf"), std::string::npos) << advice[0];
    EXPECT_NE(advice[0].find("no APNs credential"), std::string::npos) << advice[0];
    expect_clean_log();
}

// A phone registers over IMAP, a mail arrives over LMTP, the push reaches
// (mock) Apple, and the admin sees the registration with doveadm.
TEST_F(InstalledPackage, RegistersOverImapPushesOnDeliveryAndDoveadmListsIt) {
    MockApnsServer apns(apple_like_mock_config());
    apns.start();

    use_mock_apns(apns);
    ASSERT_NO_THROW(dovecot_->start());
    expect_worker_runs_as_xaps();

    auto imap = login();
    EXPECT_EQ(imap->capabilities().count(capability), 1u);
    const ImapResponse reply = register_iphone(*imap);
    ASSERT_TRUE(reply.ok());
    const std::vector<std::string> expected_untagged = {
        "* XAPPLEPUSHSERVICE \"mailbox\" \"INBOX\"",
        "* XAPPLEPUSHSERVICE \"aps-version\" \"2\" \"aps-topic\" \"" + test_pki_topic() + "\""};
    EXPECT_EQ(reply.untagged, expected_untagged);

    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns.wait_for_requests(1, push_timeout)) << "Dovecot's log:\n" << dovecot_->log();
    const MockApnsRequest push = apns.requests().at(0);
    EXPECT_EQ(push.method, "POST");
    EXPECT_EQ(push.path, std::string("/3/device/") + device_token);
    EXPECT_EQ(push.client_uid, test_pki_topic()) << "the client certificate";
    EXPECT_EQ(push.headers.count("apns-topic") ? push.headers.at("apns-topic") : "",
              test_pki_topic());
    Json::Value body;
    std::istringstream body_text(push.body);
    ASSERT_TRUE(Json::parseFromStream(Json::CharReaderBuilder(), body_text, &body, nullptr))
        << push.body;
    EXPECT_EQ(body["aps"]["account-id"].asString(), account_id) << push.body;

    CommandResult list = dovecot_->doveadm({"-f", "tab", "xaps", "list"});
    EXPECT_EQ(list.exit_code, 0) << list.err;
    const std::vector<std::string> rows = lines_of(list.out);
    ASSERT_EQ(rows.size(), 2u) << list.out << list.err;
    EXPECT_EQ(rows[0], "user\taccount_id\tdevice_token\tsubtopic\tmailboxes\taps_version\t"
                       "registered\tlast_seen");
    EXPECT_TRUE(rows[1].starts_with(std::string("alice\t") + account_id + "\t" + device_token +
                                    "\tcom.apple.mobilemail\t(\"INBOX\")\t2\t"))
        << rows[1];
    EXPECT_TRUE(imap->command("LOGOUT").ok());
}

// Mail processes (group dovecot) reach the mail socket, only root the admin
// socket: the whole policy is in these owners and modes.
TEST_F(InstalledPackage, SocketsAreOpenToGroupDovecotAndTheAdminSocketToRootOnly) {
    ASSERT_NO_THROW(dovecot_->start());
    const group *dovecot_group = ::getgrnam("dovecot");
    ASSERT_NE(dovecot_group, nullptr) << "no group dovecot";
    struct Row {
        std::string path;
        gid_t gid;
        mode_t mode;
    };
    const std::vector<Row> rows = {
        {dovecot_->worker_socket_path(), dovecot_group->gr_gid, 0660},
        {dovecot_->admin_socket_path(), 0, 0600},
    };
    // Logged in once, so that auth is up before Dovecot stops again.
    auto imap = login();
    EXPECT_TRUE(imap->command("LOGOUT").ok());
    for (const Row &row : rows) {
        SCOPED_TRACE(row.path);
        struct stat st {};
        ASSERT_EQ(::lstat(row.path.c_str(), &st), 0);
        EXPECT_TRUE(S_ISSOCK(st.st_mode));
        EXPECT_EQ(st.st_uid, 0u);
        EXPECT_EQ(st.st_gid, row.gid);
        EXPECT_EQ(st.st_mode & 07777, row.mode) << std::oct << (st.st_mode & 07777);
    }

    // Each socket serves its own commands only.
    WorkerClient admin(dovecot_->admin_socket_path());
    std::vector<WireReply> replies = admin.request({"STATUS"});
    ASSERT_FALSE(replies.empty());
    EXPECT_TRUE(replies.back().ok()) << describe(replies);
    WorkerClient mail(dovecot_->worker_socket_path());
    replies = mail.request({"STATUS"});
    ASSERT_EQ(replies.size(), 1u) << describe(replies);
    EXPECT_EQ(replies[0].fields[0], "forbidden") << describe(replies);
}

// As 95-xaps.conf tells admins: the p12 password in a root-only file, named
// with "<file" and written without a newline. The worker gets the file's
// content (the bundle opens and pushes go out), doveconf shows neither secret.
TEST_F(InstalledPackage, SecretsFromRootOnlyFilesReachTheWorkerAndNotDoveconf) {
    MockApnsServer apns(apple_like_mock_config());
    apns.start();
    const std::string password_file =
        dovecot_->install_private_text("xaps-p12-password", p12_password);
    // Distinctive, so that finding it in doveconf's output means a leak.
    const std::string hash = "5f4dcc3b5aa765d61d8327deb882cf99c0ffee00decafbad0123456789abcdef";
    const std::string hash_file = dovecot_->install_private_text("xaps-apple-password-hash", hash);
    dovecot_->set_plugin_settings({
        {"xaps_apns_p12_file", dovecot_->install_private_file(test_pki_file("client.p12"))},
        {"xaps_apns_ca_file", test_pki_file("ca.pem")},
        {"xaps_apns_host", "127.0.0.1"},
        {"xaps_apns_port", std::to_string(apns.port())},
    });
    const std::string p12_line = "xaps_apns_p12_password = <" + password_file + "\n";
    const std::string hash_line = "xaps_apple_password_hash = <" + hash_file + "\n";
    const bool plugin_block = !installed_dovecot_version().at_least(2, 4);
    dovecot_->set_raw_config(plugin_block ? "plugin {\n  " + p12_line + "  " + hash_line + "}\n"
                                          : p12_line + hash_line);
    ASSERT_NO_THROW(dovecot_->start());

    auto imap = login();
    EXPECT_EQ(imap->capabilities().count(capability), 1u) << "the p12 bundle did not open";
    ASSERT_TRUE(register_iphone(*imap).ok());
    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns.wait_for_requests(1, push_timeout)) << "Dovecot's log:\n" << dovecot_->log();
    EXPECT_EQ(apns.requests().at(0).client_uid, test_pki_topic());
    EXPECT_TRUE(imap->command("LOGOUT").ok());

    for (const char *option : {"-n", "-P"}) {
        SCOPED_TRACE(option);
        const CommandResult doveconf = dovecot_->doveconf({option});
        ASSERT_EQ(doveconf.exit_code, 0) << doveconf.err;
        EXPECT_EQ(doveconf.out.find(hash), std::string::npos) << doveconf.out;
        EXPECT_NE(doveconf.out.find("xaps_apple_password_hash = <" + hash_file), std::string::npos)
            << doveconf.out;
    }
    const CommandResult shown = dovecot_->doveconf({"-n"});
    EXPECT_NE(shown.out.find("xaps_apns_p12_password = # hidden"), std::string::npos) << shown.out;
}

// An admin's own push_notification driver, configured before the package was
// installed, keeps getting its events next to xaps.
TEST_F(InstalledPackage, KeepsAPushDriverConfiguredBeforeTheInstall) {
    if (!fs::exists(lua_driver_conf)) {
        GTEST_SKIP() << "no " << lua_driver_conf
                     << ": scripts/package-test.sh writes it before it installs the package";
    }
    MockApnsServer apns(apple_like_mock_config());
    apns.start();
    use_mock_apns(apns);
    ASSERT_NO_THROW(dovecot_->start());

    auto imap = login();
    ASSERT_TRUE(register_iphone(*imap).ok());
    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns.wait_for_requests(1, push_timeout)) << "Dovecot's log:\n" << dovecot_->log();
    EXPECT_TRUE(imap->command("LOGOUT").ok());

    // On 2.3 xaps took the slot after the Lua driver's; 2.4's named filters
    // need no slot.
    const std::string driver_file = "/etc/dovecot/conf.d/xaps-push-driver.conf.ext";
    if (installed_dovecot_version().at_least(2, 4)) {
        EXPECT_FALSE(fs::exists(driver_file)) << driver_file;
    } else {
        EXPECT_NE(read_file(driver_file).find("\n  push_notification_driver2 = xaps\n"),
                  std::string::npos)
            << read_file(driver_file);
    }

    // The Lua driver runs in the same LMTP transaction, before the reply.
    const std::string events = dovecot_->dir() + "/home/alice" + lua_push_events;
    EXPECT_EQ(fs::exists(events) ? read_file(events) : "<no " + events + ">", "MessageNew INBOX\n")
        << "Dovecot's log:\n"
        << dovecot_->log();
}

} // namespace
