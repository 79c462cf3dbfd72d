// The registration store under the address-space limit Dovecot gives a
// service: an admin's own `service xaps { }` block without the package's
// vsz_limit leaves the worker at Dovecot's default (256M), and the worker
// must still start, register phones and push.
#include "e2e-fixture.h"
#include "e2e-processes.h"
#include "e2e-store-fill.h"
#include "registration-store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace xaps::test;
using e2e::push_timeout;

// The soft "Max address space" of /proc/<pid>/limits, as written there.
std::string address_space_limit_of(pid_t pid) {
    std::ifstream limits("/proc/" + std::to_string(pid) + "/limits");
    for (std::string line; std::getline(limits, line);) {
        if (line.starts_with("Max address space")) {
            std::istringstream fields(line.substr(std::string_view("Max address space").size()));
            std::string soft;
            fields >> soft;
            return soft;
        }
    }
    return "<no Max address space line>";
}

class E2eStoreLimits : public e2e::E2eTest {
protected:
    void SetUp() override {
        if (sanitizer_run()) {
            GTEST_SKIP() << "ASan's shadow memory needs an unlimited address space: a sanitizer "
                            "build cannot run under a 256M vsz_limit";
        }
        e2e::E2eTest::SetUp();
    }
};

TEST_F(E2eStoreLimits, WorkerStartsAndPushesUnderDovecotsDefaultVszLimit) {
    DovecotOptions options = this->options();
    // After the package's service block, as an admin's own block would be.
    options.extra_config += "service xaps {\n  vsz_limit = 256M\n}\n";
    start_dovecot(std::move(options));

    const pid_t worker = e2e::worker_pid(*dovecot_);
    ASSERT_GT(worker, 0) << dovecot_->log();
    EXPECT_EQ(address_space_limit_of(worker), "268435456");

    auto imap = login("alice");
    register_phone(*imap, e2e::PhoneRegistration{});
    ASSERT_EQ(registrations("alice").size(), 1u);

    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns_->wait_for_requests(1, push_timeout)) << dovecot_->log();
    const std::vector<MockApnsRequest> pushes = apns_->requests();
    ASSERT_FALSE(pushes.empty());
    EXPECT_EQ(pushes[0].path, std::string("/3/device/") + e2e::iphone_device_token);

    const std::optional<std::string> size = e2e::process_status_field(worker, "VmSize");
    RecordProperty("worker_vm_size", size.value_or("unknown"));
    EXPECT_EQ(dovecot_->log().find("Cannot allocate memory"), std::string::npos) << dovecot_->log();
}

// A store filled elsewhere beyond what 256M lets the map grow to: the worker
// opens it, renewals and pushes go on, a new phone is refused (its IMAP
// command answered NO [UNAVAILABLE]), and the log names the limit once.
TEST_F(E2eStoreLimits, AStoreFullUnderTheVszLimitRefusesOnlyNewPhonesAndSaysSoOnce) {
    DovecotOptions options = this->options();
    options.extra_config += "service xaps {\n  vsz_limit = 256M\n}\n";
    dovecot_ = std::make_unique<DovecotInstance>(std::move(options));

    // The worker, at ~14 MiB of address space when it opens the store, may
    // grow the map to half of the ~242 MiB that 256M leaves: 121 MiB.
    constexpr std::uintmax_t filled = std::uintmax_t{130} << 20;
    const std::string data_file = dovecot_->db_path() + "/data.mdb";
    e2e::fill_store_before_start(*dovecot_, [&](xaps::RegistrationStore &store) {
        xaps::Registration phone;
        phone.user = "alice";
        phone.account_id = e2e::iphone_account_id;
        phone.device_token = e2e::iphone_device_token;
        phone.subtopic = "com.apple.mobilemail";
        phone.aps_version = 2;
        phone.mailboxes = {"INBOX"};
        store.put(phone, 1);
        // ~10 KiB each, a few overflow pages: few commits fill the map.
        unsigned next = 1;
        while (std::filesystem::file_size(data_file) < filled) {
            std::vector<xaps::Registration> batch;
            for (unsigned i = 0; i < 100; i++, next++) {
                xaps::Registration filler = phone;
                filler.user = "filler" + std::to_string(next);
                filler.device_token = e2e::device_token(next);
                filler.mailboxes.assign(40, std::string(240, 'm'));
                batch.push_back(std::move(filler));
            }
            for (const auto &result : store.put_batch(batch, 1)) {
                ASSERT_FALSE(result.has_value()) << result->what();
            }
        }
    });
    dovecot_->start();

    auto alice = login("alice");
    register_phone(*alice, e2e::PhoneRegistration{});
    auto bob = login("bob");
    e2e::PhoneRegistration bobs_phone;
    bobs_phone.device_token = e2e::device_token(1000000);
    ImapResponse refused = bob->command(e2e::xapplepushservice_command(bobs_phone));
    EXPECT_TRUE(refused.tagged.starts_with(refused.tag + " NO [UNAVAILABLE]")) << refused.tagged;
    ImapResponse again = bob->command(e2e::xapplepushservice_command(bobs_phone));
    EXPECT_TRUE(again.tagged.starts_with(again.tag + " NO [UNAVAILABLE]")) << again.tagged;
    EXPECT_TRUE(registrations("bob").empty());

    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns_->wait_for_requests(1, push_timeout)) << dovecot_->log();
    EXPECT_EQ(apns_->requests().at(0).path, std::string("/3/device/") + e2e::iphone_device_token);

    std::vector<std::string> warnings;
    std::istringstream lines(dovecot_->log());
    for (std::string line; std::getline(lines, line);) {
        if (line.find("xaps: Warning: registration store") != std::string::npos) {
            warnings.push_back(line);
        }
    }
    ASSERT_EQ(warnings.size(), 1u) << dovecot_->log();
    EXPECT_NE(warnings[0].find("is full at its limit of"), std::string::npos) << warnings[0];
    EXPECT_NE(warnings[0].find("raise service xaps { vsz_limit }"), std::string::npos)
        << warnings[0];
}

} // namespace
