// End to end: the worker's Dovecot events reach Dovecot's stats, with the
// metric { } snippet the README gives admins, and `doveadm stats dump` counts
// one registration and one delivered push.
#include "e2e-environment.h"
#include "e2e-refusals.h"
#include "imap-client.h"
#include "lmtp-client.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;

// The README's "Metrics" snippet, verbatim.
constexpr const char *metrics_config = R"(
metric xaps_push {
  filter = event=xaps_push_finished
  group_by = result
}
metric xaps_registration {
  filter = event=xaps_registration_finished
  group_by = result
}
)";

// The same for Dovecot 2.4, where group_by is a named filter.
constexpr const char *metrics_config_2_4 = R"(
metric xaps_push {
  filter = event=xaps_push_finished
  group_by result {
  }
}
metric xaps_registration {
  filter = event=xaps_registration_finished
  group_by result {
  }
}
)";

struct PipeClose {
    void operator()(FILE *file) const noexcept { pclose(file); }
};

std::string run(const std::string &command) {
    std::unique_ptr<FILE, PipeClose> pipe(popen(command.c_str(), "r"));
    if (!pipe) {
        return {};
    }
    std::string output;
    std::array<char, 4096> buffer{};
    std::size_t n = 0;
    while ((n = fread(buffer.data(), 1, buffer.size(), pipe.get())) > 0) {
        output.append(buffer.data(), n);
    }
    return output;
}

// The count column of `doveadm stats dump -f tab` for one metric row.
long metric_count(const std::string &dump, const std::string &metric_name) {
    std::istringstream lines(dump);
    std::string line;
    std::getline(lines, line); // header: metric_name field count ...
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string name;
        std::string field;
        long count = -1;
        std::getline(fields, name, '\t');
        std::getline(fields, field, '\t');
        fields >> count;
        if (name == metric_name && field == "duration") {
            return count;
        }
    }
    return -1;
}

TEST(E2eMetrics, PushAndRegistrationEventsReachDovecotStats) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "end-to-end tests need root";
    }
    MockApnsServer apns(e2e::mock_apns_config());
    apns.start();
    DovecotOptions options = e2e::dovecot_options(apns.port());
    options.extra_config =
        installed_dovecot_version().at_least(2, 4) ? metrics_config_2_4 : metrics_config;
    DovecotInstance dovecot(options);
    dovecot.start();

    ImapClient imap(dovecot.imap_port(), 10s);
    imap.login("alice", DovecotInstance::password);
    ASSERT_TRUE(imap.command(e2e::xapplepushservice_command()).ok());
    LmtpClient lmtp(dovecot.lmtp_port(), 10s);
    ASSERT_EQ(lmtp.deliver("sender@example.net", "alice@example.com",
                           make_test_message("sender@example.net", "alice@example.com", "metrics",
                                             "hello"))
                  .code,
              250);
    ASSERT_TRUE(apns.wait_for_requests(1, 10s));

    // The worker hands events to the stats process asynchronously: poll.
    std::string dump;
    for (int attempt = 0; attempt < 50; attempt++) {
        dump = run("doveadm -c " + dovecot.conf_path() + " -f tab stats dump 2>&1");
        if (metric_count(dump, "xaps_push_delivered") == 1 &&
            metric_count(dump, "xaps_registration_ok") == 1) {
            break;
        }
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(metric_count(dump, "xaps_push"), 1) << dump;
    EXPECT_EQ(metric_count(dump, "xaps_push_delivered"), 1) << dump;
    EXPECT_EQ(metric_count(dump, "xaps_registration"), 1) << dump;
    EXPECT_EQ(metric_count(dump, "xaps_registration_ok"), 1) << dump;
    dovecot.stop();
    EXPECT_TRUE(dovecot.log_problems().empty()) << dovecot.log();
    e2e::expect_no_refusals(apns);
}

} // namespace
