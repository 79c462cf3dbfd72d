// ApnsConnection against the mock APNs server: real TCP, TLS and HTTP/2.
#include "apns-connection.h"

#include "mock-apns-answers.h"
#include "mock-apns-server.h"
#include "test-pki.h"
#include "poll-event-loop.h"
#include "tls-context.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

namespace xaps {
namespace {

using namespace std::chrono_literals;
using test::answer_after;
using test::apple_like_mock_config;
using test::MockApnsConfig;
using test::MockApnsRequest;
using test::MockApnsResponse;
using test::MockApnsServer;
using test::test_pki_file;

// A listening socket on 127.0.0.1 that accepts nothing itself.
struct Listener {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::uint16_t port = 0;
    Listener() {
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)), 0);
        EXPECT_EQ(::listen(fd, 8), 0);
        socklen_t length = sizeof(address);
        ::getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
        port = ntohs(address.sin_port);
    }
    ~Listener() { ::close(fd); }
};

ApnsSettings client_settings(const std::string &ca = test_pki_file("ca.pem")) {
    ApnsSettings settings;
    settings.cert_file = test_pki_file("client.pem");
    settings.key_file = test_pki_file("client.key");
    settings.ca_file = ca;
    return settings;
}

// Records what the connection reports, in order.
struct Recorder : ApnsConnection::Observer {
    std::vector<std::string> events;
    std::vector<ApnsRequest *> answered;
    std::vector<std::pair<ApnsRequest *, bool>> unanswered;
    std::string goaway_reason;
    std::string closed_reason;
    bool closed = false;
    int capacity_calls = 0;

    void on_capacity(ApnsConnection &) override {
        capacity_calls++;
        events.push_back("capacity");
    }
    void on_response(ApnsConnection &, ApnsRequest &request) override {
        answered.push_back(&request);
        events.push_back("response " + std::to_string(request.status));
    }
    void on_unanswered(ApnsConnection &, ApnsRequest &request, bool refused) override {
        unanswered.emplace_back(&request, refused);
        events.push_back(refused ? "refused" : "unanswered");
    }
    void on_goaway(ApnsConnection &, std::string_view reason) override {
        goaway_reason = reason;
        events.push_back("goaway");
    }
    void on_closed(ApnsConnection &, std::string_view reason) override {
        closed = true;
        closed_reason = reason;
        events.push_back("closed");
    }
};

class ApnsConnectionTest : public ::testing::Test {
protected:
    void SetUp() override { mock_.start(); }

    ApnsConnectionConfig config(const std::string &host = "127.0.0.1") {
        ApnsConnectionConfig config;
        config.host = host;
        config.port = mock_.port();
        config.topic = tls_.topic();
        config.push_type = "background";
        config.connect_timeout = 5s;
        return config;
    }

    std::unique_ptr<ApnsConnection> connect(ApnsConnectionConfig config) {
        auto connection =
            std::make_unique<ApnsConnection>(loop_, tls_.native(), std::move(config), recorder_);
        connection->connect();
        return connection;
    }

    bool wait_ready(ApnsConnection &connection) {
        return loop_.run_until([&] { return connection.ready() || recorder_.closed; }, 5s) &&
               connection.ready();
    }

    // A request to the device token `suffix` padded with zeros to the 64 hex
    // digits of Apple's tokens: the mock refuses shorter ones, as APNs does.
    static std::unique_ptr<ApnsRequest> request(const std::string &suffix) {
        auto request = std::make_unique<ApnsRequest>();
        request->path = "/3/device/" + std::string(64 - suffix.size(), '0') + suffix;
        request->expiration = "1700000000";
        request->body = R"({"aps":{"account-id":"a"}})";
        return request;
    }

    PollEventLoop loop_;
    TlsContext tls_ = TlsContext::load(client_settings());
    MockApnsServer mock_{apple_like_mock_config()};
    Recorder recorder_;
};

TEST_F(ApnsConnectionTest, ConnectsAndCarriesARequest) {
    auto connection = connect(config());
    ASSERT_TRUE(wait_ready(*connection)) << recorder_.closed_reason;
    EXPECT_GE(recorder_.capacity_calls, 1);
    auto sent = request("00ff");
    ASSERT_TRUE(connection->submit(*sent));
    EXPECT_EQ(connection->in_flight(), 1u);
    ASSERT_TRUE(loop_.run_until([&] { return !recorder_.answered.empty(); }, 5s));
    EXPECT_EQ(recorder_.answered[0], sent.get());
    EXPECT_EQ(sent->status, 200);
    EXPECT_FALSE(sent->apns_id.empty());
    EXPECT_EQ(connection->in_flight(), 0u);
    EXPECT_EQ(connection->responses(), 1u);

    const std::vector<MockApnsRequest> received = mock_.requests();
    ASSERT_EQ(received.size(), 1u);
    EXPECT_EQ(received[0].method, "POST");
    EXPECT_EQ(received[0].path,
              "/3/device/00000000000000000000000000000000000000000000000000000000000000ff");
    EXPECT_EQ(received[0].headers.at(":scheme"), "https");
    EXPECT_EQ(received[0].headers.at(":authority"), "127.0.0.1:" + std::to_string(mock_.port()));
    EXPECT_EQ(received[0].headers.at("apns-topic"), tls_.topic());
    EXPECT_EQ(received[0].headers.at("apns-push-type"), "background");
    EXPECT_EQ(received[0].headers.at("apns-expiration"), "1700000000");
    EXPECT_EQ(received[0].headers.count("apns-priority"), 0u);
    EXPECT_EQ(received[0].body, R"({"aps":{"account-id":"a"}})");
    EXPECT_EQ(received[0].client_uid, tls_.topic()) << "client certificate presented";
}

TEST_F(ApnsConnectionTest, VerifiesTheServerNameWithSni) {
    auto connection = connect(config("localhost"));
    ASSERT_TRUE(wait_ready(*connection)) << recorder_.closed_reason;
}

TEST_F(ApnsConnectionTest, FailuresAreReportedThroughOnClosed) {
    struct Case {
        std::string name;
        std::string host;
        std::string ca_file;
        bool stop_mock;
        std::string reason_contains;
    };
    const std::vector<Case> cases = {
        {"server certificate from an untrusted CA", "127.0.0.1", test_pki_file("untrusted-ca.pem"),
         false, "not trusted"},
        // Resolves to 127.0.0.1, but the certificate names localhost and 127.0.0.1 only.
        {"server certificate for another name", "127.1", test_pki_file("ca.pem"), false,
         "not trusted"},
        {"nobody listening", "127.0.0.1", test_pki_file("ca.pem"), true, "Connection refused"},
        {"name that does not resolve", "no-such-host.invalid", test_pki_file("ca.pem"), false,
         "cannot resolve"},
    };
    for (const Case &row : cases) {
        SCOPED_TRACE(row.name);
        if (row.stop_mock)
            mock_.stop();
        Recorder recorder;
        TlsContext tls = TlsContext::load(client_settings(row.ca_file));
        ApnsConnectionConfig cfg = config(row.host);
        ApnsConnection connection(loop_, tls.native(), cfg, recorder);
        connection.connect();
        EXPECT_FALSE(recorder.closed) << "never reported from within connect()";
        ASSERT_TRUE(loop_.run_until([&] { return recorder.closed; }, 5s));
        EXPECT_NE(recorder.closed_reason.find(row.reason_contains), std::string::npos)
            << recorder.closed_reason;
        EXPECT_FALSE(connection.ready());
        if (row.stop_mock)
            mock_.start();
    }
}

TEST_F(ApnsConnectionTest, GivesUpOnAServerThatNeverAnswersTheHandshake) {
    Listener silent; // the kernel completes the TCP handshake, nobody speaks TLS
    ApnsConnectionConfig cfg = config();
    cfg.port = silent.port;
    cfg.connect_timeout = 100ms;
    auto connection = connect(cfg);
    ASSERT_TRUE(loop_.run_until([&] { return recorder_.closed; }, 5s));
    EXPECT_NE(recorder_.closed_reason.find("within 100 ms"), std::string::npos)
        << recorder_.closed_reason;
}

TEST_F(ApnsConnectionTest, RefusesAServerThatDoesNotSpeakHttp2) {
    Listener listener;
    // A TLS server with the right certificate but no ALPN: like an HTTP/1.1 proxy.
    std::thread server([&] {
        // This server writes with plain write(): a client gone must give
        // EPIPE here, not a SIGPIPE that ends the test process.
        sigset_t pipe_signal;
        sigemptyset(&pipe_signal);
        sigaddset(&pipe_signal, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_use_certificate_chain_file(ctx, test_pki_file("server.pem").c_str());
        SSL_CTX_use_PrivateKey_file(ctx, test_pki_file("server.key").c_str(), SSL_FILETYPE_PEM);
        const int client = ::accept(listener.fd, nullptr, nullptr);
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, client);
        SSL_accept(ssl);
        char byte;
        SSL_read(ssl, &byte, 1); // until the client gives up
        SSL_free(ssl);
        ::close(client);
        SSL_CTX_free(ctx);
    });
    ApnsConnectionConfig cfg = config();
    cfg.port = listener.port;
    auto connection = connect(cfg);
    EXPECT_TRUE(loop_.run_until([&] { return recorder_.closed; }, 5s));
    connection.reset(); // closes the socket, which ends the server's read
    server.join();
    EXPECT_NE(recorder_.closed_reason.find("HTTP/2"), std::string::npos) << recorder_.closed_reason;
}

TEST_F(ApnsConnectionTest, FollowsTheServersMaxConcurrentStreams) {
    mock_.set_max_concurrent_streams(1);
    auto connection = connect(config());
    ASSERT_TRUE(wait_ready(*connection));
    EXPECT_EQ(connection->capacity(), 1u);
    auto first = request("01");
    ASSERT_TRUE(connection->submit(*first));
    EXPECT_EQ(connection->capacity(), 0u);

    const int calls_before = recorder_.capacity_calls;
    mock_.set_max_concurrent_streams(50);
    ASSERT_TRUE(loop_.run_until([&] { return connection->capacity() >= 49; }, 5s))
        << connection->capacity();
    EXPECT_GT(recorder_.capacity_calls, calls_before);
}

TEST_F(ApnsConnectionTest, GoawayLetsStreamsFinishThenCloses) {
    mock_.set_responder(answer_after(100ms));
    auto connection = connect(config());
    ASSERT_TRUE(wait_ready(*connection));
    auto first = request("01");
    ASSERT_TRUE(connection->submit(*first));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.requests_received() == 1; }, 5s));
    mock_.send_goaway("Shutdown");
    ASSERT_TRUE(loop_.run_until([&] { return recorder_.closed; }, 5s));
    EXPECT_FALSE(connection->ready());
    EXPECT_NE(recorder_.goaway_reason.find("Shutdown"), std::string::npos);
    // The answer may come before or after the GOAWAY; it comes, before the end.
    ASSERT_EQ(recorder_.answered.size(), 1u);
    EXPECT_EQ(recorder_.answered[0]->status, 200);
    EXPECT_TRUE(recorder_.unanswered.empty());
    EXPECT_EQ(std::count(recorder_.events.begin(), recorder_.events.end(), "goaway"), 1);
    EXPECT_EQ(recorder_.events.back(), "closed");
}

TEST_F(ApnsConnectionTest, DroppedConnectionHandsBackRequestsInFlight) {
    mock_.set_responder(answer_after(5s));
    auto connection = connect(config());
    ASSERT_TRUE(wait_ready(*connection));
    auto first = request("01");
    auto second = request("02");
    ASSERT_TRUE(connection->submit(*first));
    ASSERT_TRUE(connection->submit(*second));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.requests_received() == 2; }, 5s));
    mock_.drop_connections();
    ASSERT_TRUE(loop_.run_until([&] { return recorder_.closed; }, 5s));
    ASSERT_EQ(recorder_.unanswered.size(), 2u);
    EXPECT_FALSE(recorder_.unanswered[0].second) << "maybe processed: not a refusal";
    EXPECT_EQ(recorder_.events.back(), "closed");
    EXPECT_EQ(connection->in_flight(), 0u);
}

TEST_F(ApnsConnectionTest, PingsWhenIdleAndStaysOpen) {
    ApnsConnectionConfig cfg = config();
    cfg.ping_interval = 40ms;
    cfg.ping_timeout = 1s;
    auto connection = connect(cfg);
    ASSERT_TRUE(wait_ready(*connection));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.pings_received() >= 2; }, 5s));
    EXPECT_TRUE(connection->ready());
    EXPECT_FALSE(recorder_.closed);
}

TEST_F(ApnsConnectionTest, CancelsARequestUnansweredPastTheTimeout) {
    mock_.set_responder(answer_after(5s));
    ApnsConnectionConfig cfg = config();
    cfg.request_timeout = 80ms;
    auto connection = connect(cfg);
    ASSERT_TRUE(wait_ready(*connection));
    auto slow = request("01");
    ASSERT_TRUE(connection->submit(*slow));
    ASSERT_TRUE(loop_.run_until([&] { return !recorder_.unanswered.empty(); }, 5s));
    EXPECT_EQ(recorder_.unanswered[0].first, slow.get());
    EXPECT_FALSE(recorder_.unanswered[0].second);
    EXPECT_TRUE(connection->ready()) << "the connection itself is fine";
}

TEST_F(ApnsConnectionTest, SendsPriorityOnlyWhenConfigured) {
    ApnsConnectionConfig cfg = config();
    cfg.priority = "5";
    cfg.push_type = "alert";
    auto connection = connect(cfg);
    ASSERT_TRUE(wait_ready(*connection));
    auto sent = request("0a");
    ASSERT_TRUE(connection->submit(*sent));
    ASSERT_TRUE(loop_.run_until([&] { return !recorder_.answered.empty(); }, 5s));
    const MockApnsRequest received = mock_.requests().at(0);
    EXPECT_EQ(received.headers.at("apns-priority"), "5");
    EXPECT_EQ(received.headers.at("apns-push-type"), "alert");
}

TEST_F(ApnsConnectionTest, DestroyingAnOpenConnectionDoesNotCallBack) {
    auto connection = connect(config());
    ASSERT_TRUE(wait_ready(*connection));
    auto sent = request("01");
    ASSERT_TRUE(connection->submit(*sent));
    recorder_.events.clear();
    connection.reset();
    loop_.run_once(20ms);
    EXPECT_TRUE(recorder_.events.empty());
    EXPECT_EQ(loop_.watch_count(), 0u);
}

// A burst of answers is handed over a few at a time while the read is still
// being parsed, so that the pushes queued behind them go out at once, not
// after the whole burst: when the first answer arrives, most of the burst
// has not been parsed yet (its requests have no status), and requests
// submitted from on_response are all carried.
TEST_F(ApnsConnectionTest, HandsOverAnswersWhileStillReadingABurst) {
    constexpr std::size_t burst = 200;
    // All answered together: the mock holds each answer until the same moment.
    const auto answer_at = std::chrono::steady_clock::now() + 300ms;
    mock_.set_responder([answer_at](const MockApnsRequest &) {
        MockApnsResponse response;
        response.delay = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::max(answer_at - std::chrono::steady_clock::now(),
                     std::chrono::steady_clock::duration::zero()));
        return response;
    });
    struct FollowUp : Recorder {
        std::vector<std::unique_ptr<ApnsRequest>> *requests = nullptr;
        std::vector<std::unique_ptr<ApnsRequest>> follow_ups;
        std::size_t answered_when_first_delivered = 0;
        void on_response(ApnsConnection &connection, ApnsRequest &answer) override {
            Recorder::on_response(connection, answer);
            if (answered.size() == 1) {
                answered_when_first_delivered = static_cast<std::size_t>(
                    std::count_if(requests->begin(), requests->end(),
                                  [](const auto &r) { return r->status != 0; }));
            }
            if (follow_ups.size() < burst) {
                follow_ups.push_back(ApnsConnectionTest::request("ff"));
                EXPECT_TRUE(connection.submit(*follow_ups.back()));
            }
        }
    } observer;
    std::vector<std::unique_ptr<ApnsRequest>> requests;
    observer.requests = &requests;
    auto connection = std::make_unique<ApnsConnection>(loop_, tls_.native(), config(), observer);
    connection->connect();
    ASSERT_TRUE(loop_.run_until([&] { return connection->ready() || observer.closed; }, 5s));
    ASSERT_GE(connection->capacity(), burst);
    for (std::size_t i = 0; i < burst; ++i) {
        requests.push_back(request("0a"));
        ASSERT_TRUE(connection->submit(*requests.back()));
    }
    ASSERT_TRUE(loop_.run_until([&] { return observer.answered.size() == 2 * burst; }, 10s))
        << observer.answered.size() << " " << observer.closed_reason;
    EXPECT_LT(observer.answered_when_first_delivered, burst / 2);
    EXPECT_GE(observer.answered_when_first_delivered, 1u);
    EXPECT_EQ(mock_.requests_received(), 2 * burst);
}

} // namespace
} // namespace xaps
