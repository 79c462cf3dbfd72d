// The registration store under the address-space limit Dovecot gives a
// service: an admin's own `service xaps { }` block without the package's
// vsz_limit leaves the worker at Dovecot's default (256M), and the worker
// must still start, register phones and push.
#include "e2e-fixture.h"
#include "e2e-processes.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace xaps::test;
using e2e::push_timeout;

// As tests/support reads XAPS_TEST_SANITIZER (scripts/sanitize.sh).
bool sanitizer_run() {
    const char *value = std::getenv("XAPS_TEST_SANITIZER");
    return value != nullptr && std::string_view(value) == "1";
}

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

using E2eStoreLimits = e2e::E2eTest;

TEST_F(E2eStoreLimits, WorkerStartsAndPushesUnderDovecotsDefaultVszLimit) {
    if (sanitizer_run()) {
        GTEST_SKIP() << "ASan's shadow memory needs an unlimited address space: a sanitizer "
                        "build cannot run under a 256M vsz_limit";
    }
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

} // namespace
