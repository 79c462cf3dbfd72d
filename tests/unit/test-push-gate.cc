// PushGate on a real PollEventLoop: what a closed gate does with a push, and
// that an open one forwards.
#include "push-gate.h"

#include "poll-event-loop.h"

#include <gtest/gtest.h>

#include <vector>

using namespace std::chrono_literals;

namespace {

class CountingSender : public xaps::PushSender {
public:
    void send(const xaps::Push &push, Done) override { sent.push_back(push.device_token); }
    std::vector<std::string> sent;
};

xaps::Push push_to(std::string token) {
    xaps::Push push;
    push.device_token = std::move(token);
    push.account_id = "ACCOUNT";
    return push;
}

TEST(PushGateTest, ClosedGateFailsEveryPushWithItsReasonLaterNeverWithinSend) {
    xaps::PollEventLoop loop;
    xaps::PushGate gate(loop, "no APNs credential configured");
    EXPECT_FALSE(gate.is_open());
    EXPECT_EQ(gate.topic(), "");
    EXPECT_EQ(gate.reason(), "no APNs credential configured");

    std::vector<xaps::PushOutcome> outcomes;
    gate.send(push_to("aa"), [&](const xaps::PushOutcome &o) { outcomes.push_back(o); });
    gate.send(push_to("bb"), [&](const xaps::PushOutcome &o) { outcomes.push_back(o); });
    EXPECT_TRUE(outcomes.empty()) << "answered from within send()";
    ASSERT_TRUE(loop.run_until([&] { return outcomes.size() == 2; }, 10s));
    for (const auto &outcome : outcomes) {
        EXPECT_EQ(outcome.result, xaps::PushOutcome::Result::failed);
        EXPECT_EQ(outcome.reason, "no APNs credential configured");
        EXPECT_EQ(outcome.http_status, 0);
    }
}

TEST(PushGateTest, OpenGateForwardsAndCarriesTheTopic) {
    xaps::PollEventLoop loop;
    CountingSender apns;
    xaps::PushGate gate(loop, "starting");
    gate.open(apns, "com.apple.mail.XServer.1");
    EXPECT_TRUE(gate.is_open());
    EXPECT_EQ(gate.topic(), "com.apple.mail.XServer.1");
    EXPECT_EQ(gate.reason(), "");
    gate.send(push_to("aa"), [](const xaps::PushOutcome &) {});
    EXPECT_EQ(apns.sent, std::vector<std::string>{"aa"});
}

TEST(PushGateTest, ClosingStopsForwardingAndForgetsTheTopic) {
    xaps::PollEventLoop loop;
    CountingSender apns;
    xaps::PushGate gate(loop, "starting");
    gate.open(apns, "com.apple.mail.XServer.1");
    gate.close("certificate expired");
    EXPECT_FALSE(gate.is_open());
    EXPECT_EQ(gate.topic(), "");
    EXPECT_EQ(gate.reason(), "certificate expired");

    bool failed = false;
    gate.send(push_to("aa"), [&](const xaps::PushOutcome &o) {
        failed = o.result == xaps::PushOutcome::Result::failed && o.reason == "certificate expired";
    });
    ASSERT_TRUE(loop.run_until([&] { return failed; }, 10s));
    EXPECT_TRUE(apns.sent.empty());
}

TEST(PushGateDeathTest, ClosingWithoutAReasonIsABug) {
    xaps::PollEventLoop loop;
    xaps::PushGate gate(loop, "starting");
    EXPECT_DEATH(gate.close(""), "assertion failed: \\(!reason.empty\\(\\)\\)");
}

} // namespace
