// An upgrade from the previous release, as an admin runs it: with the old
// package installed and its Dovecot serving registered phones, `dpkg -i` of
// the new .deb, then the reload its postinst gives the machine's Dovecot.
// scripts/package-test.sh installs the previous release (built from the
// commit it pins) and runs this suite with XAPS_UPGRADE_TO_DEB naming the new
// .deb; without it the case skips.
#include "eventually.h"
#include "installed-dovecot.h"
#include "test-files.h"

#include "imap-client.h"
#include "lmtp-client.h"
#include "mock-apns-server.h"
#include "test-pki.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <sys/wait.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char *package = "dovecot-xaps";
// The store the package keeps across upgrades, used here instead of a private one.
constexpr const char *state_dir = "/var/lib/dovecot-xaps";
// Generous for a loaded two-core machine: each wait ends as soon as its
// condition holds.
constexpr auto deadline = 60s;

struct Device {
    std::string user;
    std::string account_id;
    std::string token;
    std::vector<std::string> mailboxes;
};

const std::vector<Device> devices = {
    {"alice",
     "0715A26B-CA09-4730-A419-793000CA982E",
     "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a",
     {"INBOX"}},
    {"alice",
     "5C1E8F0A-93D2-4B7E-8A61-0F4D2C9B7E13",
     "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
     {"INBOX", "Archive", "Sent Messages"}},
    {"bob",
     "C4D2E6F8-1A3B-4C5D-9E7F-0A1B2C3D4E5F",
     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
     {"INBOX"}},
};

std::string joined(const std::vector<std::string> &lines) {
    std::string text;
    for (const auto &line : lines) {
        text += line + "\n";
    }
    return text;
}

// Runs argv to its end (at most `deadline`); out and err together.
CommandResult run_command(const std::vector<std::string> &argv, const std::string &scratch_dir) {
    const std::string output_path = scratch_dir + "/command.txt";
    return xaps::test::run_command(argv, output_path, output_path, deadline);
}

// Not once it exited: a zombie has no executable any more.
bool is_running(pid_t pid) {
    std::error_code error;
    const fs::path exe = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", error);
    return !error && !exe.empty();
}

// "<status> <version>" of the package as dpkg knows it.
std::string package_state(const std::string &scratch_dir) {
    return run_command({"/usr/bin/dpkg-query", "-W", "-f", "${Status} ${Version}", package},
                       scratch_dir)
        .out;
}

// Every regular file below `root`, relative to it.
std::set<std::string> files_below(const fs::path &root) {
    std::set<std::string> files;
    if (!fs::exists(root)) {
        return files;
    }
    for (const auto &entry : fs::recursive_directory_iterator(root)) {
        if (entry.is_regular_file()) {
            files.insert(fs::relative(entry.path(), root).string());
        }
    }
    return files;
}

class PackageUpgrade : public ::testing::Test {
protected:
    void SetUp() override {
        const char *deb = std::getenv("XAPS_UPGRADE_TO_DEB");
        if (deb == nullptr || *deb == '\0') {
            GTEST_SKIP() << "XAPS_UPGRADE_TO_DEB is not set: scripts/package-test.sh installs "
                            "the previous release and names the new .deb";
        }
        if (::geteuid() != 0) {
            GTEST_SKIP() << "the upgrade test installs a package: it needs root";
        }
        new_deb_ = deb;
        ASSERT_TRUE(fs::exists(installed_worker)) << "the previous release is not installed";
        dovecot_ = std::make_unique<InstalledDovecot>();
    }

    void TearDown() override {
        if (dovecot_ && dovecot_->running()) {
            dovecot_->stop();
        }
    }

    std::unique_ptr<ImapClient> login(const std::string &user) {
        auto imap = std::make_unique<ImapClient>(dovecot_->imap_port());
        const ImapResponse reply = imap->login(user, InstalledDovecot::password);
        EXPECT_TRUE(reply.ok()) << reply.tagged << "\nDovecot's log:\n" << dovecot_->log();
        return imap;
    }

    void register_device(const Device &device) {
        auto imap = login(device.user);
        std::string mailboxes;
        for (const auto &mailbox : device.mailboxes) {
            if (mailbox != "INBOX") {
                EXPECT_TRUE(imap->command("CREATE \"" + mailbox + "\"").ok()) << mailbox;
            }
            mailboxes += (mailboxes.empty() ? "\"" : " \"") + mailbox + "\"";
        }
        const ImapResponse reply = imap->command(
            "XAPPLEPUSHSERVICE \"aps-version\" \"2\" \"aps-account-id\" \"" + device.account_id +
            "\" \"aps-device-token\" \"" + device.token +
            "\" \"aps-subtopic\" \"com.apple.mobilemail\" \"mailboxes\" (" + mailboxes + ")");
        EXPECT_TRUE(reply.ok()) << joined(reply.lines()) << "\nDovecot's log:\n" << dovecot_->log();
        EXPECT_TRUE(imap->command("LOGOUT").ok());
    }

    std::string doveadm_list() {
        const CommandResult list = dovecot_->doveadm({"-f", "tab", "xaps", "list"});
        EXPECT_EQ(list.exit_code, 0) << list.err;
        return list.out;
    }

    std::string scratch_dir() const { return dovecot_->dir(); }

    std::string new_deb_;
    std::unique_ptr<InstalledDovecot> dovecot_;
};

TEST_F(PackageUpgrade, FromThePreviousReleaseKeepsRegistrationsAndRestartsTheWorker) {
    std::string new_version =
        run_command({"/usr/bin/dpkg-deb", "-f", new_deb_, "Version"}, scratch_dir()).out;
    new_version = new_version.substr(0, new_version.find('\n'));
    const std::string old_state = package_state(scratch_dir());
    ASSERT_TRUE(old_state.starts_with("install ok installed ")) << old_state;
    ASSERT_NE(old_state, "install ok installed " + new_version)
        << "the previous release must have another version than the new .deb";

    MockApnsServer apns(apple_like_mock_config());
    apns.start();
    std::map<std::string, std::string> settings = dovecot_->mock_apns_settings(apns.port());
    settings["xaps_db_path"] = state_dir;
    dovecot_->set_plugin_settings(std::move(settings));
    ASSERT_NO_THROW(dovecot_->start());

    for (const Device &device : devices) {
        register_device(device);
    }
    const std::string listed_before = doveadm_list();
    for (const Device &device : devices) {
        EXPECT_NE(listed_before.find(device.user + "\t" + device.account_id + "\t" + device.token),
                  std::string::npos)
            << device.token << " is not listed:\n"
            << listed_before;
    }
    EXPECT_EQ(std::count(listed_before.begin(), listed_before.end(), '\n'), 4)
        << "a header and three devices:\n"
        << listed_before;
    EXPECT_NE(listed_before.find("(\"INBOX\" \"Archive\" \"Sent Messages\")"), std::string::npos)
        << listed_before;

    const std::optional<ServiceProcess> old_worker = dovecot_->service_process(installed_worker);
    ASSERT_TRUE(old_worker.has_value()) << "no worker before the upgrade";

    // The upgrade itself, what `apt-get install ./new.deb` runs.
    const CommandResult upgrade = run_command({"/usr/bin/dpkg", "-i", new_deb_}, scratch_dir());
    ASSERT_EQ(upgrade.exit_code, 0) << upgrade.out;
    EXPECT_EQ(package_state(scratch_dir()), "install ok installed " + new_version);

    // The files on the machine are the new package's: the worker binary, and
    // the conffiles the admin did not edit, updated without a question and
    // without .dpkg-* leftovers.
    const std::string unpacked = scratch_dir() + "/new-deb";
    ASSERT_EQ(run_command({"/usr/bin/dpkg-deb", "-x", new_deb_, unpacked}, scratch_dir()).exit_code,
              0);
    EXPECT_TRUE(read_file(installed_worker) == read_file(unpacked + installed_worker))
        << installed_worker << " is not the new package's";
    const std::set<std::string> conffiles = files_below(unpacked + "/etc");
    EXPECT_FALSE(conffiles.empty()) << "the new .deb ships no file under /etc";
    for (const std::string &conffile : conffiles) {
        SCOPED_TRACE("/etc/" + conffile);
        EXPECT_EQ(read_file("/etc/" + conffile), read_file(unpacked + "/etc/" + conffile));
        for (const char *leftover : {".dpkg-dist", ".dpkg-old", ".dpkg-new"}) {
            EXPECT_FALSE(fs::exists("/etc/" + conffile + leftover)) << leftover;
        }
    }

    // As the postinst reloads the machine's Dovecot, this one is reloaded
    // with the upgraded configuration.
    dovecot_->copy_installed_config_again();
    const CommandResult reload = dovecot_->reload();
    ASSERT_EQ(reload.exit_code, 0) << reload.out << reload.err;

    ASSERT_TRUE(dovecot_->wait_for_log("SIGHUP received - reloading configuration", deadline))
        << dovecot_->log();
    EXPECT_TRUE(eventually([&] { return !is_running(old_worker->pid); }, deadline))
        << "the old worker (pid " << old_worker->pid << ") still runs";

    // Everything registered before is listed as it was, byte for byte. The
    // master starts the worker on demand: this starts the new one.
    EXPECT_EQ(doveadm_list(), listed_before);
    const std::optional<ServiceProcess> new_worker = dovecot_->service_process(installed_worker);
    ASSERT_TRUE(new_worker.has_value())
        << "no worker runs the new " << installed_worker << "\nDovecot's log:\n"
        << dovecot_->log();
    EXPECT_NE(new_worker->pid, old_worker->pid);

    // New mail still reaches every registered phone of its user.
    LmtpClient lmtp(dovecot_->lmtp_port());
    for (const char *user : {"alice", "bob"}) {
        const std::string rcpt = std::string(user) + "@example.com";
        const SmtpReply delivery = lmtp.deliver(
            "sender@example.net", rcpt,
            make_test_message("sender@example.net", rcpt, "After the upgrade", "Still pushed.\n"));
        EXPECT_EQ(delivery.code, 250) << delivery.text();
    }
    ASSERT_TRUE(apns.wait_for_requests(devices.size(), deadline))
        << apns.requests().size() << " pushes\nDovecot's log:\n"
        << dovecot_->log();
    std::multiset<std::string> pushed;
    for (const MockApnsRequest &request : apns.requests()) {
        pushed.insert(request.path);
    }
    std::multiset<std::string> expected;
    for (const Device &device : devices) {
        expected.insert("/3/device/" + device.token);
    }
    EXPECT_EQ(pushed, expected);
    EXPECT_TRUE(apns.refused_requests().empty()) << apns.refused_requests().at(0).refused_reason;

    dovecot_->stop();
    EXPECT_EQ(joined(dovecot_->log_errors()), "") << "Dovecot's log:\n" << dovecot_->log();
}

} // namespace
