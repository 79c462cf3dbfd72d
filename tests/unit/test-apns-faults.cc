// ApnsClient against an Apple that misbehaves for a while: answers taking
// 10 s, TLS handshakes that fail, connections cut in the middle of a frame,
// GOAWAY storms. Each fault lasts a window in which the client must keep its
// pushes (none failed, none lost), must not spin (how often the loop calls
// into it is counted), and after which it must deliver every push exactly
// once to the caller. Real TLS + HTTP/2 on loopback. No assertion depends on
// how fast the machine is: a slow one only waits longer for the same counts.
#include "apns-client.h"

#include "mock-apns-answers.h"
#include "mock-apns-server.h"
#include "test-pki.h"
#include "poll-event-loop.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace xaps {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Result = PushOutcome::Result;
using test::answer_after;
using test::apple_like_mock_config;
using test::GoawayStreams;
using test::MockApnsConfig;
using test::MockApnsRequest;
using test::MockApnsResponse;
using test::MockApnsServer;
using test::test_pki_file;

MockApnsConfig mock_config(std::uint16_t port = 0) {
    MockApnsConfig config = apple_like_mock_config();
    config.port = port;
    return config;
}

std::string token(int n) {
    char buffer[16];
    std::snprintf(buffer, sizeof(buffer), "%08x", n);
    return std::string(56, 'b') + buffer;
}

// How long to wait for what takes milliseconds, even in a sanitizer build on
// a busy machine. Only a deadline: nothing is asserted about the time taken.
constexpr std::chrono::milliseconds patience = 30s;

// The client's code runs only in the callbacks of its fd watches and timers,
// so counting them counts its wake-ups. A busy loop (a watch that is always
// ready, a timer re-armed at zero delay) wakes it thousands of times a second
// on any machine; a client that waits for work wakes per event: per packet
// read, per timer of a reconnect or retry, and per period of its
// housekeeping timers. A slow machine coalesces events and wakes it less.
class WakeupCountingLoop : public EventLoop {
public:
    explicit WakeupCountingLoop(EventLoop &loop) : loop_(loop) {}

    std::unique_ptr<Watch> watch_fd(int fd, IoDirection direction, Callback callback) override {
        return loop_.watch_fd(fd, direction, counted(std::move(callback)));
    }
    std::unique_ptr<Watch> call_after(std::chrono::milliseconds delay, Callback callback) override {
        return loop_.call_after(delay, counted(std::move(callback)));
    }
    std::chrono::steady_clock::time_point now() const override { return loop_.now(); }

    std::size_t wakeups() const { return wakeups_; }

private:
    Callback counted(Callback callback) {
        return [this, callback = std::move(callback)] {
            wakeups_++;
            callback();
        };
    }

    EventLoop &loop_;
    std::size_t wakeups_ = 0;
};

std::chrono::milliseconds elapsed(Clock::time_point since) {
    return std::chrono::ceil<std::chrono::milliseconds>(Clock::now() - since);
}

// What a client that waits for work may wake for, at most: per request a
// write (when the socket was full) and a read of its answer; per connection
// the backoff timer, the connect, the TLS handshake and the HTTP/2 preface, a
// GOAWAY, the end. A busy loop exceeds these by orders of magnitude whatever
// the machine.
constexpr std::size_t wakeups_per_request = 2;
constexpr std::size_t wakeups_per_connection = 16;

// The client's periodic timers (the queue's sweep, each open connection's
// tick) fire at most once a second with the settings below, plus a few
// wake-ups for what was under way when the window opened.
std::size_t housekeeping_wakeups(std::chrono::milliseconds window, std::size_t connections = 1) {
    const auto seconds = std::size_t(std::chrono::ceil<std::chrono::seconds>(window).count());
    return (1 + connections) * (seconds + 1) + 4;
}

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(Fd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd &operator=(Fd &&other) noexcept {
        std::swap(fd_, other.fd_);
        return *this;
    }
    ~Fd() {
        if (fd_ >= 0)
            ::close(fd_);
    }
    int get() const { return fd_; }

private:
    int fd_;
};

Fd listen_on(std::uint16_t port) {
    Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int on = 1;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    if (::bind(listener.get(), reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
        ::listen(listener.get(), 64) != 0)
        throw std::runtime_error("cannot listen on port " + std::to_string(port));
    return listener;
}

std::uint16_t port_of(int fd) {
    sockaddr_in address{};
    socklen_t length = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
    return ntohs(address.sin_port);
}

std::uint16_t free_port() {
    Fd probe = listen_on(0);
    return port_of(probe.get());
}

// Closes with a TCP RST: no FIN, no TLS close_notify, whatever was in flight.
void reset_connection(Fd &fd) {
    linger abort{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    fd = Fd();
}

// A TCP server on 127.0.0.1 that is not APNs: it resets each connection at
// once, answers the TLS ClientHello with plain-text HTTP/1.1, or reads and
// never answers. Counts the connections it accepted.
class HostileServer {
public:
    enum class Mode { reset, plain_text, silent };

    HostileServer(std::uint16_t port, Mode mode) : listener_(listen_on(port)), mode_(mode) {
        thread_ = std::thread([this] { run(); });
    }
    ~HostileServer() {
        stop_ = true;
        thread_.join();
    }
    std::size_t accepted() const { return accepted_; }

private:
    void run() {
        std::vector<Fd> clients;
        char buffer[4096];
        while (!stop_) {
            std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
            for (const Fd &client : clients)
                fds.push_back({client.get(), POLLIN, 0});
            if (::poll(fds.data(), fds.size(), 20) <= 0)
                continue;
            for (std::size_t i = 1; i < fds.size(); i++) {
                if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
                    continue;
                const ssize_t got = ::recv(fds[i].fd, buffer, sizeof buffer, 0);
                if (got <= 0) {
                    clients[i - 1] = Fd();
                } else if (mode_ == Mode::plain_text) {
                    const std::string reply =
                        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
                    (void)::send(fds[i].fd, reply.data(), reply.size(), MSG_NOSIGNAL);
                    clients[i - 1] = Fd();
                }
            }
            std::erase_if(clients, [](const Fd &fd) { return fd.get() < 0; });
            if ((fds[0].revents & POLLIN) != 0) {
                Fd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (client.get() < 0)
                    continue;
                accepted_++;
                if (mode_ == Mode::reset)
                    reset_connection(client);
                else
                    clients.push_back(std::move(client));
            }
        }
    }

    Fd listener_;
    Mode mode_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> accepted_{0};
    std::thread thread_;
};

// A TCP relay in front of the mock that resets the n-th connection after it
// relayed cut_after[n] bytes from the server to the client: in the middle of
// the TLS handshake, or of a TLS record and so of an HTTP/2 frame. Connections
// past the list are relayed whole.
class CuttingProxy {
public:
    CuttingProxy(std::uint16_t upstream_port, std::vector<std::size_t> cut_after)
        : listener_(listen_on(0)), upstream_port_(upstream_port), cut_after_(std::move(cut_after)) {
        thread_ = std::thread([this] { run(); });
    }
    ~CuttingProxy() {
        stop_ = true;
        thread_.join();
    }
    std::uint16_t port() const { return port_of(listener_.get()); }
    std::size_t connections() const { return connections_; }
    std::size_t cuts() const { return cuts_; }

private:
    struct Pair {
        Fd client;
        Fd server;
        std::size_t budget; // server-to-client bytes left before the cut
    };

    Fd connect_upstream() const {
        Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(upstream_port_);
        if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&address), sizeof address) != 0)
            return Fd();
        return fd;
    }

    // Blocking writes are fine: loopback, and the peers keep reading.
    static bool write_all(int fd, const char *data, std::size_t size) {
        while (size > 0) {
            const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
            if (sent <= 0)
                return false;
            data += sent;
            size -= static_cast<std::size_t>(sent);
        }
        return true;
    }

    void run() {
        std::vector<Pair> pairs;
        char buffer[16384];
        while (!stop_) {
            std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
            for (const Pair &pair : pairs) {
                fds.push_back({pair.client.get(), POLLIN, 0});
                fds.push_back({pair.server.get(), POLLIN, 0});
            }
            if (::poll(fds.data(), fds.size(), 20) <= 0)
                continue;
            for (std::size_t p = 0; p < pairs.size(); p++) {
                Pair &pair = pairs[p];
                if ((fds[1 + 2 * p].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                    const ssize_t got = ::recv(pair.client.get(), buffer, sizeof buffer, 0);
                    if (got <= 0 || !write_all(pair.server.get(), buffer, std::size_t(got))) {
                        pair.client = Fd();
                        continue;
                    }
                }
                if ((fds[2 + 2 * p].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                    const ssize_t got = ::recv(pair.server.get(), buffer, sizeof buffer, 0);
                    if (got <= 0) {
                        pair.client = Fd();
                        continue;
                    }
                    const std::size_t relay = std::min(pair.budget, std::size_t(got));
                    pair.budget -= relay;
                    if (!write_all(pair.client.get(), buffer, relay) || pair.budget == 0) {
                        cuts_ += pair.budget == 0 ? 1 : 0;
                        reset_connection(pair.client);
                        reset_connection(pair.server);
                    }
                }
            }
            std::erase_if(pairs, [](const Pair &pair) { return pair.client.get() < 0; });
            if ((fds[0].revents & POLLIN) != 0) {
                Fd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                Fd server = connect_upstream();
                if (client.get() < 0 || server.get() < 0)
                    continue;
                const std::size_t n = connections_++;
                const std::size_t budget = n < cut_after_.size() ? cut_after_[n] : SIZE_MAX;
                pairs.push_back(Pair{std::move(client), std::move(server), budget});
            }
        }
    }

    Fd listener_;
    std::uint16_t upstream_port_;
    std::vector<std::size_t> cut_after_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> connections_{0};
    std::atomic<std::size_t> cuts_{0};
    std::thread thread_;
};

class ApnsFaultsTest : public ::testing::Test {
protected:
    ApnsSettings settings(std::uint16_t port) {
        ApnsSettings s = ApnsSettings::from(default_xaps_settings());
        s.host = "127.0.0.1";
        s.port = port;
        s.ca_file = test_pki_file("ca.pem");
        s.cert_file = test_pki_file("client.pem");
        s.key_file = test_pki_file("client.key");
        s.reconnect_initial_delay = 50ms;
        s.reconnect_max_delay = 400ms;
        s.retry_initial_delay = 10ms;
        s.retry_max_delay = 50ms;
        s.connect_timeout = 2s;
        // Longer than any fault window here: pushes must wait, not fail.
        s.give_up_after = 60s;
        return s;
    }

    ApnsClient &start_client(const ApnsSettings &s) {
        client_ = std::make_unique<ApnsClient>(counting_loop_, s, TlsContext::load(s),
                                               [this](LogLevel level, std::string_view message) {
                                                   std::lock_guard lock(log_mutex_);
                                                   log_.emplace_back(level, std::string(message));
                                               });
        client_->start();
        return *client_;
    }

    void send(int n) {
        const std::string device = token(n);
        client_->send(Push{device, "account-" + std::to_string(n)},
                      [this, device](const PushOutcome &outcome) {
                          outcomes_[device].push_back(outcome);
                          done_calls_++;
                      });
    }

    // Runs the client's loop for `window`; returns how often it woke the client.
    std::size_t wakeups_during(std::chrono::milliseconds window) {
        const std::size_t before = counting_loop_.wakeups();
        loop_.run_until([] { return false; }, window);
        return counting_loop_.wakeups() - before;
    }

    bool wait_done(std::size_t count, std::chrono::milliseconds timeout) {
        return loop_.run_until([&] { return done_calls_ >= count; }, timeout);
    }

    // Every push got exactly one outcome, and it is `delivered`.
    void expect_all_delivered_once(int count) {
        for (int n = 0; n < count; n++) {
            SCOPED_TRACE(token(n));
            const auto &list = outcomes_[token(n)];
            ASSERT_EQ(list.size(), 1u) << "done is called exactly once per push";
            EXPECT_EQ(list[0].result, Result::delivered) << list[0].reason;
        }
        EXPECT_EQ(done_calls_, std::size_t(count));
    }

    static std::map<std::string, int> requests_per_token(const MockApnsServer &mock) {
        std::map<std::string, int> counts;
        for (const MockApnsRequest &request : mock.requests())
            counts[request.device_token]++;
        return counts;
    }

    PollEventLoop loop_;
    WakeupCountingLoop counting_loop_{loop_};
    std::unique_ptr<ApnsClient> client_;
    std::map<std::string, std::vector<PushOutcome>> outcomes_;
    std::size_t done_calls_ = 0;
    std::mutex log_mutex_;
    std::vector<std::pair<LogLevel, std::string>> log_;
};

// Apple takes 10 s to answer and allows 20 streams: 20 pushes wait on the
// wire, 10 in the client's queue. Nothing is failed, resent or dropped while
// the answers take their time, and the client idles meanwhile.
TEST_F(ApnsFaultsTest, SlowAppleKeepsTheQueueAndIdles) {
    constexpr int pushes = 30;
    static constexpr auto answer_delay = 10s;
    MockApnsServer mock(mock_config());
    mock.set_max_concurrent_streams(20);
    std::atomic<bool> slow{true};
    mock.set_responder([&slow](const MockApnsRequest &) {
        MockApnsResponse response;
        if (slow)
            response.delay = answer_delay;
        return response;
    });
    mock.start();
    ApnsClient &client = start_client(settings(mock.port()));
    ASSERT_TRUE(loop_.run_until([&] { return client.stats().connected; }, patience));

    for (int n = 0; n < pushes; n++)
        send(n);
    ASSERT_TRUE(loop_.run_until([&] { return mock.requests_received() == 20; }, patience));
    // Ends before the first answer: the mock's delay started before the window.
    constexpr auto window = answer_delay - 1500ms;
    const std::size_t wakeups = wakeups_during(window);
    EXPECT_LE(wakeups, housekeeping_wakeups(window)) << "the client must idle while Apple is slow";
    EXPECT_EQ(done_calls_, 0u) << "a slow answer is not a failure";
    EXPECT_EQ(client.stats().in_flight, 20u);
    EXPECT_EQ(client.stats().queued, std::size_t(pushes - 20)) << "the rest wait in the queue";
    EXPECT_EQ(mock.requests_received(), 20u) << "nothing is resent while Apple is thinking";

    slow = false; // the next round is answered at once
    ASSERT_TRUE(wait_done(pushes, answer_delay + patience)) << done_calls_ << " of " << pushes;
    expect_all_delivered_once(pushes);
    for (const auto &[device, count] : requests_per_token(mock))
        EXPECT_EQ(count, 1) << device;
    EXPECT_EQ(mock.connections_accepted(), 1u) << "a slow Apple does not cost the connection";
}

// Apple's TLS fails in various ways for a while, then comes back on the same
// port. Meanwhile pushes wait, the client backs off (few attempts, few
// wake-ups each), keeps trying, and then every push is delivered.
TEST_F(ApnsFaultsTest, TlsHandshakeFailuresThenRecovery) {
    enum class Fault { refused, reset, plain_text, silent, untrusted_client, untrusted_server };
    struct Row {
        const char *name;
        Fault fault;
    };
    const std::vector<Row> rows = {
        {"nothing listens (connection refused)", Fault::refused},
        {"the server resets every connection", Fault::reset},
        {"the server answers the ClientHello in plain text", Fault::plain_text},
        {"the server never answers the handshake", Fault::silent},
        {"Apple refuses the client certificate", Fault::untrusted_client},
        {"the server's certificate is not trusted", Fault::untrusted_server},
    };
    constexpr auto window = 2500ms;
    constexpr int pushes = 20;
    constexpr std::size_t wakeups_per_failed_attempt = 12;
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        const std::uint16_t port = free_port();
        std::unique_ptr<HostileServer> hostile;
        std::unique_ptr<MockApnsServer> refusing;
        std::size_t attempts_allowed = 0;
        ApnsSettings s = settings(port);
        s.connect_timeout = 300ms; // so that a silent server costs attempts too
        switch (row.fault) {
        case Fault::refused:
            break;
        case Fault::reset:
            hostile = std::make_unique<HostileServer>(port, HostileServer::Mode::reset);
            break;
        case Fault::plain_text:
            hostile = std::make_unique<HostileServer>(port, HostileServer::Mode::plain_text);
            break;
        case Fault::silent:
            hostile = std::make_unique<HostileServer>(port, HostileServer::Mode::silent);
            break;
        case Fault::untrusted_client: {
            MockApnsConfig config = mock_config(port);
            config.client_ca_file = test_pki_file("untrusted-ca.pem");
            refusing = std::make_unique<MockApnsServer>(config);
            refusing->start();
            break;
        }
        case Fault::untrusted_server: {
            // A certificate from another CA, and not for 127.0.0.1 either.
            MockApnsConfig config = mock_config(port);
            config.cert_file = test_pki_file("client-untrusted.pem");
            config.key_file = test_pki_file("client-untrusted.key");
            refusing = std::make_unique<MockApnsServer>(config);
            refusing->start();
            break;
        }
        }
        // Backoff 25-50, 50-100, 100-200, 200-400, then 200-400 ms (plus the
        // connect timeout for a silent server): about a dozen attempts at most
        // in the window; a slower machine makes fewer.
        attempts_allowed = 16;
        const auto attempts = [&]() -> std::size_t {
            return hostile ? hostile->accepted() : refusing ? refusing->connections_accepted() : 0;
        };

        outcomes_.clear();
        done_calls_ = 0;
        ApnsClient &client = start_client(s);
        for (int n = 0; n < pushes; n++)
            send(n);
        const std::size_t wakeups = wakeups_during(window);
        const std::size_t attempts_in_window = attempts();
        EXPECT_LE(attempts_in_window, attempts_allowed) << "reconnects back off";
        // Per attempt: the backoff timer, the connect, the handshake's reads
        // and writes, a timeout, the cleanup. A refused connect still counts.
        EXPECT_LE(wakeups, wakeups_per_failed_attempt * (attempts_allowed + 1) +
                               housekeeping_wakeups(window))
            << "no busy loop while the handshake fails";
        if (row.fault != Fault::refused) {
            EXPECT_TRUE(loop_.run_until([&] { return attempts() >= 3; }, patience))
                << attempts() << " attempts: it must keep trying";
        }
        EXPECT_EQ(done_calls_, 0u) << "pushes wait within give_up_after";
        EXPECT_EQ(client.stats().queued, std::size_t(pushes));
        EXPECT_FALSE(client.stats().connected);
        if (refusing) {
            EXPECT_EQ(refusing->requests_received(), 0u);
        }

        hostile.reset();
        refusing.reset();
        MockApnsServer apple(mock_config(port));
        apple.start();
        ASSERT_TRUE(wait_done(pushes, patience)) << done_calls_ << " of " << pushes;
        expect_all_delivered_once(pushes);
        EXPECT_TRUE(client.stats().connected);
        EXPECT_EQ(requests_per_token(apple).size(), std::size_t(pushes));
        client_.reset();
    }
}

// Connections die at arbitrary byte offsets: inside the TLS handshake,
// inside TLS records carrying HTTP/2 frames. Pushes in flight are sent again
// on the next connection; every push ends delivered, reported once.
TEST_F(ApnsFaultsTest, ConnectionsCutMidFrameRecover) {
    MockApnsServer mock(mock_config());
    mock.set_responder(answer_after(2ms)); // keeps several streams open at any time
    mock.start();
    std::mt19937 random(20240611);
    std::vector<std::size_t> cut_after;
    for (int i = 0; i < 16; i++)
        cut_after.push_back(std::uniform_int_distribution<std::size_t>(40, 9000)(random));
    CuttingProxy proxy(mock.port(), cut_after);

    ApnsSettings s = settings(proxy.port());
    s.max_resends = 32; // each cut may catch the same push again
    ApnsClient &client = start_client(s);
    constexpr int pushes = 400;
    const std::size_t wakeups_before = counting_loop_.wakeups();
    const auto started = Clock::now();
    for (int n = 0; n < pushes; n++) {
        send(n);
        if (n % 10 == 9)
            loop_.run_once(5ms); // a steady stream, not one burst
    }
    ASSERT_TRUE(wait_done(pushes, 2 * patience))
        << done_calls_ << " of " << pushes << "; proxy cut " << proxy.cuts() << " of "
        << proxy.connections();
    const std::size_t wakeups = counting_loop_.wakeups() - wakeups_before;
    expect_all_delivered_once(pushes);
    EXPECT_EQ(proxy.cuts(), cut_after.size()) << "every planned cut happened";
    EXPECT_GT(client.stats().retries, 0u) << "pushes in flight were sent again";
    EXPECT_TRUE(client.stats().connected);
    const auto per_token = requests_per_token(mock);
    EXPECT_EQ(per_token.size(), std::size_t(pushes)) << "every push reached Apple";
    EXPECT_LE(wakeups, wakeups_per_request * mock.requests_received() +
                           wakeups_per_connection * proxy.connections() +
                           housekeeping_wakeups(elapsed(started), 2))
        << "reconnecting 16 times is no reason to spin";
}

// Apple sends 100 GOAWAYs, 30 ms apart, while pushes keep coming: the first
// half letting the open streams finish, then the second half refusing them
// (in that order: a server may lower the last stream id of a later GOAWAY,
// never raise it, and the storm reaches connections that are still
// draining). The client moves to new connections each time and loses
// nothing; afterwards it is connected and pushes flow as before. The storm is
// a number of GOAWAYs, not a duration: a slow machine takes longer for it.
TEST_F(ApnsFaultsTest, GoawayStormRecovers) {
    constexpr int storm_goaways = 100;
    MockApnsServer mock(mock_config());
    mock.set_responder(answer_after(5ms));
    mock.start();
    ApnsClient &client = start_client(settings(mock.port()));
    ASSERT_TRUE(loop_.run_until([&] { return client.stats().connected; }, patience));

    std::atomic<bool> storming{true};
    std::thread storm([&] {
        for (int i = 0; i < storm_goaways; i++) {
            mock.send_goaway(i % 3 == 0 ? "Shutdown" : "MaintenanceWindow",
                             i < storm_goaways / 2 ? GoawayStreams::finish : GoawayStreams::refuse);
            std::this_thread::sleep_for(30ms);
        }
        storming = false;
    });
    int sent = 0;
    const std::size_t wakeups_before = counting_loop_.wakeups();
    const auto started = Clock::now();
    while (storming) {
        for (int i = 0; i < 5; i++)
            send(sent++);
        loop_.run_once(20ms);
    }
    storm.join();
    ASSERT_TRUE(wait_done(std::size_t(sent), patience)) << done_calls_ << " of " << sent;
    const std::size_t storm_wakeups = counting_loop_.wakeups() - wakeups_before;
    const auto storm_time = elapsed(started);

    expect_all_delivered_once(sent);
    for (const auto &[level, message] : log_) {
        EXPECT_EQ(message.find("protocol error"), std::string::npos) << message;
    }
    // The first GOAWAY reaches the connection the client had: it must move.
    EXPECT_GE(mock.connections_accepted(), 2u);
    EXPECT_LE(mock.connections_accepted(), std::size_t(storm_goaways) + 2)
        << "one new connection per GOAWAY at most, no reconnect loop";
    EXPECT_LE(storm_wakeups, wakeups_per_request * mock.requests_received() +
                                 wakeups_per_connection * mock.connections_accepted() +
                                 housekeeping_wakeups(storm_time, 2))
        << "a TLS handshake per GOAWAY, nothing more";

    // After the storm: one connection, and pushes go through at once.
    ASSERT_TRUE(loop_.run_until([&] { return client.stats().connected; }, patience));
    const std::size_t connections = mock.connections_accepted();
    for (int i = 0; i < 20; i++)
        send(sent++);
    ASSERT_TRUE(wait_done(std::size_t(sent), patience));
    expect_all_delivered_once(sent);
    EXPECT_EQ(mock.connections_accepted(), connections) << "the connection is stable again";
    const std::size_t idle_wakeups = wakeups_during(1s);
    EXPECT_LE(idle_wakeups, housekeeping_wakeups(1s)) << "an idle client sleeps";
}

} // namespace
} // namespace xaps
