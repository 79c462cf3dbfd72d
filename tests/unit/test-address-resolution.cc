// AddressResolution on a real PollEventLoop, a real thread and the real
// resolver for literal addresses; a lookup that sleeps stands in for a DNS
// server that does not answer.
#include "address-resolution.h"

#include "poll-event-loop.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace xaps {
namespace {

using namespace std::chrono_literals;

struct Answer {
    AddressResolution::Addresses addresses;
    std::string error;
};

// getaddrinfo() after `delay`, as a resolver waiting for a DNS server.
AddressResolution::Lookup slow_lookup(std::chrono::milliseconds delay) {
    return [delay](const char *host, const char *service, const addrinfo *hints, addrinfo **found) {
        std::this_thread::sleep_for(delay);
        return ::getaddrinfo(host, service, hints, found);
    };
}

TEST(AddressResolution, LiteralAddressIsResolvedWithItsPort) {
    PollEventLoop loop;
    std::optional<Answer> answer;
    AddressResolution resolution(loop, "127.0.0.1", 2197,
                                 [&](AddressResolution::Addresses addresses, std::string error) {
                                     answer = Answer{std::move(addresses), std::move(error)};
                                 });
    ASSERT_TRUE(loop.run_until([&] { return answer.has_value(); }, 5s));
    EXPECT_EQ(answer->error, "");
    ASSERT_EQ(answer->addresses.size(), 1u);
    ASSERT_EQ(answer->addresses[0].size(), sizeof(sockaddr_in));
    sockaddr_in address{};
    std::memcpy(&address, answer->addresses[0].data(), sizeof(address));
    EXPECT_EQ(address.sin_family, AF_INET);
    EXPECT_EQ(ntohs(address.sin_port), 2197);
    EXPECT_EQ(ntohl(address.sin_addr.s_addr), INADDR_LOOPBACK);
}

TEST(AddressResolution, TheLoopRunsWhileTheResolverWaits) {
    PollEventLoop loop;
    bool answered = false;
    int ticks = 0;
    const auto started = std::chrono::steady_clock::now();
    AddressResolution resolution(
        loop, "127.0.0.1", 443, [&](AddressResolution::Addresses, std::string) { answered = true; },
        slow_lookup(400ms));
    std::unique_ptr<EventLoop::Watch> tick;
    std::function<void()> on_tick = [&] {
        ++ticks;
        tick = loop.call_after(20ms, on_tick);
    };
    tick = loop.call_after(20ms, on_tick);
    ASSERT_TRUE(loop.run_until([&] { return answered; }, 5s));
    EXPECT_GE(std::chrono::steady_clock::now() - started, 400ms);
    // A blocking lookup would have let no timer run before it returned.
    EXPECT_GE(ticks, 5) << "timers ran while the lookup was in progress";
}

TEST(AddressResolution, FailureNamesTheHostAndWhy) {
    PollEventLoop loop;
    std::optional<Answer> answer;
    AddressResolution resolution(
        loop, "api.push.apple.com", 443,
        [&](AddressResolution::Addresses addresses, std::string error) {
            answer = Answer{std::move(addresses), std::move(error)};
        },
        [](const char *, const char *, const addrinfo *, addrinfo **) { return EAI_AGAIN; });
    ASSERT_TRUE(loop.run_until([&] { return answer.has_value(); }, 5s));
    EXPECT_TRUE(answer->addresses.empty());
    EXPECT_EQ(answer->error,
              std::string("cannot resolve api.push.apple.com: ") + ::gai_strerror(EAI_AGAIN));
}

TEST(AddressResolution, DestroyedBeforeTheAnswerNeverCallsBack) {
    PollEventLoop loop;
    std::atomic<bool> lookup_done{false};
    bool called = false;
    auto resolution = std::make_unique<AddressResolution>(
        loop, "127.0.0.1", 443, [&](AddressResolution::Addresses, std::string) { called = true; },
        [&](const char *host, const char *service, const addrinfo *hints, addrinfo **found) {
            std::this_thread::sleep_for(100ms);
            const int rc = ::getaddrinfo(host, service, hints, found);
            lookup_done = true;
            return rc;
        });
    resolution.reset();
    // The thread finishes on its own and writes into what it still owns.
    EXPECT_FALSE(loop.run_until([&] { return called; }, 400ms));
    EXPECT_TRUE(lookup_done);
    EXPECT_FALSE(called);
}

} // namespace
} // namespace xaps
