// ApnsClient against the mock APNs server: real TLS + HTTP/2 on loopback,
// with delays shortened so that outages and retries take milliseconds.
#include "apns-client.h"
#include "push-scheduler.h"

#include "xaps-error.h"

#include "mock-apns-answers.h"
#include "mock-apns-server.h"
#include "test-keys.h"
#include "test-pki.h"
#include "poll-event-loop.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace xaps {
namespace {

using namespace std::chrono_literals;
using Result = PushOutcome::Result;
using test::answer_after;
using test::apple_like_mock_config;
using test::MockApnsConfig;
using test::MockApnsRequest;
using test::MockApnsResponse;
using test::MockApnsServer;
using test::test_pki_file;
using test::test_pki_topic;

MockApnsResponse answer(int status, std::string reason = {},
                        std::optional<std::int64_t> timestamp = std::nullopt) {
    MockApnsResponse response;
    response.status = status;
    response.reason = std::move(reason);
    response.timestamp_ms = timestamp;
    return response;
}

// Bounds a wait that only a failure reaches: generous enough for a loaded
// machine running sanitizers.
constexpr auto failure_deadline = 60s;
// An answer or a setting that no test outlives: "never" within a test.
constexpr auto never = 600s;

std::string token(int n) {
    char buffer[16];
    std::snprintf(buffer, sizeof(buffer), "%08x", n);
    return std::string(56, 'a') + buffer;
}

std::map<std::string, int> requests_per_token_on(const MockApnsServer &server) {
    std::map<std::string, int> counts;
    for (const MockApnsRequest &request : server.requests())
        counts[request.device_token]++;
    return counts;
}

class ApnsClientTest : public ::testing::Test {
protected:
    void SetUp() override { mock_.start(); }

    ApnsSettings settings() {
        ApnsSettings settings = ApnsSettings::from(default_xaps_settings());
        settings.host = "127.0.0.1";
        settings.port = mock_.port();
        settings.ca_file = test_pki_file("ca.pem");
        settings.cert_file = test_pki_file("client.pem");
        settings.key_file = test_pki_file("client.key");
        settings.reconnect_initial_delay = 20ms;
        settings.reconnect_max_delay = 100ms;
        settings.retry_initial_delay = 5ms;
        settings.retry_max_delay = 20ms;
        settings.connect_timeout = 2s;
        settings.give_up_after = never; // tests that want pushes to time out say so
        return settings;
    }

    ApnsClient &make_client(const ApnsSettings &s) {
        TlsContext tls = TlsContext::load(s);
        client_ = std::make_unique<ApnsClient>(loop_, s, std::move(tls),
                                               [this](LogLevel level, std::string_view message) {
                                                   log_.emplace_back(level, std::string(message));
                                               });
        return *client_;
    }

    ApnsClient &started_client(const ApnsSettings &s) {
        ApnsClient &client = make_client(s);
        client.start();
        EXPECT_TRUE(loop_.run_until([&] { return client.stats().connected; }, failure_deadline));
        return client;
    }

    // Sends a push whose outcome lands in outcomes_[token]; counts calls.
    void send(const std::string &device_token, const std::string &account_id = "account") {
        client_->send(Push{device_token, account_id}, [this, device_token](const PushOutcome &o) {
            outcomes_[device_token].push_back(o);
            done_calls_++;
        });
    }

    bool wait_done(std::size_t count, std::chrono::milliseconds timeout = failure_deadline) {
        return loop_.run_until([&] { return done_calls_ >= count; }, timeout);
    }

    const PushOutcome &outcome(const std::string &device_token) {
        const auto &list = outcomes_[device_token];
        EXPECT_EQ(list.size(), 1u) << "done called exactly once for " << device_token;
        static const PushOutcome none;
        return list.empty() ? none : list.front();
    }

    std::map<std::string, int> requests_per_token() {
        std::map<std::string, int> counts;
        for (const MockApnsRequest &request : mock_.requests())
            counts[request.device_token]++;
        return counts;
    }

    PollEventLoop loop_;
    MockApnsServer mock_{apple_like_mock_config()};
    std::unique_ptr<ApnsClient> client_;
    std::map<std::string, std::vector<PushOutcome>> outcomes_;
    std::size_t done_calls_ = 0;
    std::vector<std::pair<LogLevel, std::string>> log_;
};

TEST_F(ApnsClientTest, SendsTheExactRequestApnsExpects) {
    ApnsClient &client = started_client(settings());
    EXPECT_EQ(client.topic(), test_pki_topic());
    const auto before = std::chrono::system_clock::now();
    send(token(1), "3f6a1c2e-0b7d-4e59-a8c3-5d2f1e0a9b8c");
    ASSERT_TRUE(wait_done(1));
    EXPECT_EQ(outcome(token(1)).result, Result::delivered);
    EXPECT_EQ(outcome(token(1)).http_status, 200);
    EXPECT_FALSE(outcome(token(1)).apns_id.empty());

    const std::vector<MockApnsRequest> requests = mock_.requests();
    ASSERT_EQ(requests.size(), 1u);
    const MockApnsRequest &request = requests[0];
    EXPECT_EQ(request.method, "POST");
    EXPECT_EQ(request.path, "/3/device/" + token(1));
    EXPECT_EQ(request.client_uid, test_pki_topic());
    std::set<std::string> names;
    for (const auto &[name, value] : request.headers)
        names.insert(name);
    EXPECT_EQ(names, (std::set<std::string>{":method", ":path", ":scheme", ":authority",
                                            "apns-topic", "apns-push-type", "apns-expiration"}));
    EXPECT_EQ(request.headers.at("apns-topic"), test_pki_topic());
    EXPECT_EQ(request.headers.at("apns-push-type"), "background");
    const auto expected_expiration =
        std::chrono::duration_cast<std::chrono::seconds>(before.time_since_epoch()).count() +
        24 * 3600;
    EXPECT_NEAR(std::stoll(request.headers.at("apns-expiration")), expected_expiration, 5);
    EXPECT_EQ(request.body, R"({"aps":{"account-id":"3f6a1c2e-0b7d-4e59-a8c3-5d2f1e0a9b8c"}})");
}

TEST_F(ApnsClientTest, PushTypePriorityAndExpirationFollowTheSettings) {
    ApnsSettings s = settings();
    s.push_type = "alert";
    s.priority = 5;
    s.expiration = std::chrono::hours(1);
    started_client(s);
    send(token(1));
    ASSERT_TRUE(wait_done(1));
    const MockApnsRequest request = mock_.requests().at(0);
    EXPECT_EQ(request.headers.at("apns-push-type"), "alert");
    EXPECT_EQ(request.headers.at("apns-priority"), "5");
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    EXPECT_NEAR(std::stoll(request.headers.at("apns-expiration")), now + 3600, 5);
}

TEST_F(ApnsClientTest, AccountIdIsEscapedAsJson) {
    started_client(settings());
    const std::string account = "we\"ird\\id\n\x01\xc3\xa9";
    send(token(1), account);
    ASSERT_TRUE(wait_done(1));
    Json::Value body;
    std::istringstream(mock_.requests().at(0).body) >> body;
    EXPECT_EQ(body["aps"]["account-id"].asString(), account);
    EXPECT_EQ(body.size(), 1u);
    EXPECT_EQ(body["aps"].size(), 1u);
}

// A burst of one push per tracked device, arriving while the connections are
// still being set up, waits in the queue instead of failing.
TEST(ApnsClientDefaults, QueueHoldsAPushForEveryDeviceTheSchedulerTracks) {
    EXPECT_GE(ApnsSettings{}.max_queued, PushSchedulerSettings{}.max_pending);
}

TEST_F(ApnsClientTest, AccountIdWithNulIsRejectedWithoutARequest) {
    started_client(settings());
    send(token(1), std::string("acc\0ount", 8));
    ASSERT_TRUE(wait_done(1));
    EXPECT_EQ(outcome(token(1)).result, Result::rejected);
    EXPECT_EQ(outcome(token(1)).reason, "invalid account id");
    EXPECT_TRUE(mock_.requests().empty());
}

TEST_F(ApnsClientTest, MapsEveryFinalAnswerToItsOutcome) {
    struct Row {
        MockApnsResponse response;
        Result result;
        std::string reason;
        std::optional<std::int64_t> unregistered_at_ms;
    };
    const std::vector<Row> rows = {
        {answer(200), Result::delivered, "", std::nullopt},
        {answer(410, "Unregistered", 1700000000123), Result::device_gone, "Unregistered",
         1700000000123},
        {answer(400, "BadDeviceToken"), Result::device_gone, "BadDeviceToken", std::nullopt},
        {answer(400, "DeviceTokenNotForTopic"), Result::device_gone, "DeviceTokenNotForTopic",
         std::nullopt},
        {answer(400, "BadTopic"), Result::rejected, "BadTopic", std::nullopt},
        {answer(403, "BadCertificate"), Result::rejected, "BadCertificate", std::nullopt},
        {answer(413, "PayloadTooLarge"), Result::rejected, "PayloadTooLarge", std::nullopt},
        {answer(404, "BadPath"), Result::rejected, "BadPath", std::nullopt},
    };
    std::map<std::string, MockApnsResponse> script;
    for (std::size_t i = 0; i < rows.size(); i++)
        script[token(static_cast<int>(i))] = rows[i].response;
    mock_.set_responder(
        [script](const MockApnsRequest &request) { return script.at(request.device_token); });
    started_client(settings());
    for (std::size_t i = 0; i < rows.size(); i++)
        send(token(static_cast<int>(i)));
    ASSERT_TRUE(wait_done(rows.size()));
    for (std::size_t i = 0; i < rows.size(); i++) {
        SCOPED_TRACE(std::to_string(rows[i].response.status) + " " + rows[i].reason);
        const PushOutcome &got = outcome(token(static_cast<int>(i)));
        EXPECT_EQ(got.result, rows[i].result);
        EXPECT_EQ(got.http_status, rows[i].response.status);
        EXPECT_EQ(got.reason, rows[i].reason);
        EXPECT_EQ(got.unregistered_at_ms, rows[i].unregistered_at_ms);
    }
    EXPECT_EQ(mock_.requests().size(), rows.size()) << "final answers are not retried";
}

TEST_F(ApnsClientTest, TransientAnswersAreRetriedUntilDelivered) {
    const std::vector<int> statuses = {429, 500, 503};
    std::mutex mutex;
    std::map<std::string, int> seen;
    mock_.set_responder([&](const MockApnsRequest &request) {
        std::lock_guard lock(mutex);
        const int index = std::stoi(request.device_token.substr(56), nullptr, 16);
        if (seen[request.device_token]++ < 2)
            return answer(statuses.at(static_cast<std::size_t>(index)));
        return answer(200);
    });
    started_client(settings());
    for (int i = 0; i < 3; i++)
        send(token(i));
    ASSERT_TRUE(wait_done(3));
    for (int i = 0; i < 3; i++) {
        SCOPED_TRACE(statuses[static_cast<std::size_t>(i)]);
        EXPECT_EQ(outcome(token(i)).result, Result::delivered);
        EXPECT_EQ(requests_per_token()[token(i)], 3);
    }
    EXPECT_EQ(client_->stats().retries, 6u);
}

TEST_F(ApnsClientTest, TransientAnswersPastTheRetryBoundFail) {
    mock_.set_responder([](const MockApnsRequest &) { return answer(503, "ServiceUnavailable"); });
    ApnsSettings s = settings();
    s.max_retries = 2;
    started_client(s);
    send(token(1));
    ASSERT_TRUE(wait_done(1));
    EXPECT_EQ(outcome(token(1)).result, Result::failed);
    EXPECT_EQ(outcome(token(1)).http_status, 503);
    EXPECT_NE(outcome(token(1)).reason.find("ServiceUnavailable"), std::string::npos);
    EXPECT_EQ(mock_.requests().size(), 3u);
}

TEST_F(ApnsClientTest, PushesWaitForARestartedServer) {
    ApnsSettings s = settings();
    s.give_up_after = never;
    ApnsClient &client = started_client(s);
    mock_.stop();
    ASSERT_TRUE(loop_.run_until([&] { return !client.stats().connected; }, failure_deadline));
    for (int i = 0; i < 5; i++)
        send(token(i));
    // A few failed reconnects.
    ASSERT_TRUE(loop_.run_until([&] { return client.stats().reconnects >= 2; }, failure_deadline));
    EXPECT_EQ(done_calls_, 0u) << "nothing fails while within give_up_after";
    EXPECT_EQ(client.stats().queued, 5u);
    const std::size_t accepted_before = mock_.connections_accepted();
    mock_.start();
    ASSERT_TRUE(wait_done(5));
    for (int i = 0; i < 5; i++)
        EXPECT_EQ(outcome(token(i)).result, Result::delivered);
    EXPECT_GE(client.stats().reconnects, 2u);
    EXPECT_EQ(mock_.connections_accepted(), accepted_before + 1);
}

TEST_F(ApnsClientTest, ReconnectsWithBackoffNotInATightLoop) {
    ApnsSettings s = settings();
    s.ca_file = test_pki_file("untrusted-ca.pem"); // every handshake fails
    s.reconnect_initial_delay = 20ms;
    s.reconnect_max_delay = 80ms;
    ApnsClient &client = make_client(s);
    const auto started = std::chrono::steady_clock::now();
    client.start();
    ASSERT_TRUE(
        loop_.run_until([&] { return mock_.connections_accepted() >= 5; }, failure_deadline));
    // Backoff 10-20, 20-40, 40-80, then 40-80 ms between attempts: the fifth
    // comes 110 ms after the first at the earliest (a loaded machine only
    // makes it later), where a tight loop would take a few.
    EXPECT_GE(std::chrono::steady_clock::now() - started, 110ms);
    EXPECT_FALSE(client.stats().connected);
    std::size_t warnings = 0;
    for (const auto &[level, message] : log_)
        warnings += level == LogLevel::warning;
    EXPECT_GE(warnings, 1u);
    EXPECT_LE(warnings, 2u) << "repeated failures are not logged at warning each time";
}

TEST_F(ApnsClientTest, PushesFailWhenApnsStaysUnreachable) {
    mock_.stop();
    ApnsSettings s = settings();
    s.give_up_after = 150ms;
    ApnsClient &client = make_client(s);
    client.start();
    send(token(1));
    ASSERT_TRUE(wait_done(1));
    EXPECT_EQ(outcome(token(1)).result, Result::failed);
    EXPECT_EQ(outcome(token(1)).http_status, 0);
    EXPECT_NE(outcome(token(1)).reason.find("unreachable"), std::string::npos)
        << outcome(token(1)).reason;
    EXPECT_EQ(client.stats().queued, 0u);
}

TEST_F(ApnsClientTest, DroppedConnectionResendsWhatWasInFlight) {
    mock_.set_responder([](const MockApnsRequest &request) {
        MockApnsResponse response;
        if (request.connection_index == 0)
            response.delay = never; // not answered on the first connection
        return response;
    });
    ApnsClient &client = started_client(settings());
    for (int i = 0; i < 4; i++)
        send(token(i));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.requests_received() == 4; }, failure_deadline));
    mock_.drop_connections();
    ASSERT_TRUE(wait_done(4));
    for (int i = 0; i < 4; i++) {
        EXPECT_EQ(outcome(token(i)).result, Result::delivered);
        EXPECT_EQ(requests_per_token()[token(i)], 2);
    }
    EXPECT_EQ(client.stats().in_flight, 0u);
}

TEST_F(ApnsClientTest, APushNeverAnsweredIsResentABoundedNumberOfTimes) {
    mock_.set_responder(answer_after(never));
    ApnsSettings s = settings();
    s.request_timeout = 40ms;
    s.max_resends = 2;
    started_client(s);
    send(token(1));
    ASSERT_TRUE(wait_done(1));
    EXPECT_EQ(outcome(token(1)).result, Result::failed);
    EXPECT_NE(outcome(token(1)).reason.find("before it answered"), std::string::npos)
        << outcome(token(1)).reason;
    EXPECT_EQ(mock_.requests().size(), 3u);
    EXPECT_EQ(mock_.connections_accepted(), 1u) << "a slow answer does not cost the connection";
}

TEST_F(ApnsClientTest, GoawayMidStreamResendsWhatTheServerDidNotTake) {
    mock_.set_responder([](const MockApnsRequest &request) {
        MockApnsResponse response;
        if (request.connection_index == 0)
            response.delay = 100ms;
        return response;
    });
    ApnsClient &client = started_client(settings());
    for (int i = 0; i < 5; i++)
        send(token(i));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.requests_received() == 5; }, failure_deadline));
    mock_.send_goaway("Shutdown");
    // Sent before the client reads the GOAWAY: on the old connection, above
    // its last stream id, so refused and sent again on a new connection.
    for (int i = 5; i < 10; i++)
        send(token(i));
    ASSERT_TRUE(wait_done(10));
    for (int i = 0; i < 10; i++) {
        SCOPED_TRACE(i);
        EXPECT_EQ(outcome(token(i)).result, Result::delivered);
        EXPECT_EQ(requests_per_token()[token(i)], 1) << "each push reaches Apple once";
    }
    for (const MockApnsRequest &request : mock_.requests()) {
        const int index = std::stoi(request.device_token.substr(56), nullptr, 16);
        EXPECT_EQ(request.connection_index, index < 5 ? 0u : 1u) << index;
    }
    EXPECT_EQ(mock_.connections_accepted(), 2u);
    EXPECT_TRUE(client.stats().connected);
}

TEST_F(ApnsClientTest, FollowsMaxConcurrentStreamsAsTheServerRaisesIt) {
    mock_.set_max_concurrent_streams(1);
    mock_.set_responder(answer_after(5ms));
    ApnsClient &client = started_client(settings());
    for (int i = 0; i < 6; i++)
        send(token(i));
    std::size_t most_in_flight = 0;
    ASSERT_TRUE(loop_.run_until(
        [&] {
            most_in_flight = std::max(most_in_flight, client.stats().in_flight);
            return done_calls_ == 6;
        },
        failure_deadline));
    EXPECT_EQ(most_in_flight, 1u);

    mock_.set_max_concurrent_streams(100);
    loop_.run_once(20ms); // the new SETTINGS arrive
    for (int i = 6; i < 30; i++)
        send(token(i));
    EXPECT_GT(client.stats().in_flight, 1u) << "all sent at once now";
    ASSERT_TRUE(wait_done(30));
}

TEST_F(ApnsClientTest, ManyPushesArePipelinedOnOneConnection) {
    ApnsClient &client = started_client(settings());
    constexpr int count = 3000;
    for (int i = 0; i < count; i++)
        send(token(i));
    ASSERT_TRUE(wait_done(count));
    for (int i = 0; i < count; i++)
        ASSERT_EQ(outcome(token(i)).result, Result::delivered) << token(i);
    EXPECT_EQ(client.stats().sent, static_cast<std::uint64_t>(count));
    EXPECT_EQ(mock_.connections_accepted(), 1u);
    EXPECT_EQ(requests_per_token().size(), static_cast<std::size_t>(count));
}

TEST_F(ApnsClientTest, SeveralConnectionsShareTheLoad) {
    ApnsSettings s = settings();
    s.connections = 3;
    ApnsClient &client = make_client(s);
    client.start();
    ASSERT_TRUE(
        loop_.run_until([&] { return client.stats().connections_ready == 3; }, failure_deadline));
    for (int i = 0; i < 30; i++)
        send(token(i));
    ASSERT_TRUE(wait_done(30));
    std::set<std::size_t> used;
    for (const MockApnsRequest &request : mock_.requests())
        used.insert(request.connection_index);
    EXPECT_EQ(used.size(), 3u);
}

TEST_F(ApnsClientTest, DoneIsNeverCalledFromWithinSend) {
    ApnsSettings s = settings();
    s.max_queued = 1;
    ApnsClient &client = make_client(s); // not started: pushes queue
    send(token(1));
    send("not hex!"); // rejected at once...
    send(token(2));   // ...and this one finds the queue full
    EXPECT_EQ(done_calls_, 0u);
    loop_.run_once(10ms);
    EXPECT_EQ(done_calls_, 2u);
    EXPECT_EQ(outcome("not hex!").result, Result::rejected);
    EXPECT_EQ(outcome(token(2)).result, Result::failed);
    client.start();
    ASSERT_TRUE(wait_done(3));
    EXPECT_EQ(outcome(token(1)).result, Result::delivered);
}

TEST_F(ApnsClientTest, DoneMaySendAgain) {
    started_client(settings());
    int chained = 0;
    std::function<void(const PushOutcome &)> again = [&](const PushOutcome &outcome) {
        EXPECT_EQ(outcome.result, Result::delivered);
        if (++chained < 3)
            client_->send(Push{token(chained), "a"}, again);
    };
    client_->send(Push{token(0), "a"}, again);
    ASSERT_TRUE(loop_.run_until([&] { return chained == 3; }, failure_deadline));
    loop_.run_once(10ms);
    EXPECT_EQ(chained, 3);
    EXPECT_TRUE(client_->stats().connected);
    EXPECT_EQ(mock_.requests().size(), 3u);
}

TEST_F(ApnsClientTest, DestroyingTheClientWithPushesInFlightIsSafe) {
    mock_.set_responder(answer_after(never));
    started_client(settings());
    for (int i = 0; i < 5; i++)
        send(token(i));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.requests_received() == 5; }, failure_deadline));
    client_.reset();
    loop_.run_once(20ms);
    EXPECT_EQ(done_calls_, 0u);
    EXPECT_EQ(loop_.watch_count(), 0u);
}

TEST_F(ApnsClientTest, Pkcs12ClientCertificateAuthenticates) {
    ApnsSettings s = settings();
    s.cert_file.clear();
    s.key_file.clear();
    s.p12_file = test_pki_file("client.p12");
    s.p12_password = "test";
    ApnsClient &client = started_client(s);
    EXPECT_EQ(client.topic(), test_pki_topic());
    send(token(1));
    ASSERT_TRUE(wait_done(1));
    EXPECT_EQ(outcome(token(1)).result, Result::delivered);
    const MockApnsRequest request = mock_.requests().at(0);
    EXPECT_EQ(request.client_uid, test_pki_topic()) << "the certificate from the PKCS#12 file";
    EXPECT_EQ(request.headers.count("authorization"), 0u);
    EXPECT_FALSE(client.provider_token_age().has_value());
}

TEST_F(ApnsClientTest, DisableFailsEverythingAndStopsConnecting) {
    mock_.set_responder(answer_after(never));
    ApnsSettings s = settings();
    s.give_up_after = never;
    ApnsClient &client = started_client(s);
    send(token(1));
    ASSERT_TRUE(loop_.run_until([&] { return mock_.requests_received() == 1; }, failure_deadline));
    mock_.stop(); // a retry would need a new connection
    send(token(2));
    client.disable("certificate expired");
    EXPECT_EQ(done_calls_, 0u) << "done is never called from within disable()";
    // Long before the answer or give_up_after: failed by disable().
    ASSERT_TRUE(wait_done(2));
    for (int i : {1, 2}) {
        EXPECT_EQ(outcome(token(i)).result, Result::failed);
        EXPECT_EQ(outcome(token(i)).reason, "certificate expired");
    }
    send(token(3));
    ASSERT_TRUE(wait_done(3));
    EXPECT_EQ(outcome(token(3)).reason, "certificate expired");
    mock_.start();
    client.start();
    loop_.run_until([] { return false; }, 200ms);
    EXPECT_EQ(mock_.connections_accepted(), 1u) << "no connection after disable()";
    EXPECT_TRUE(client.disabled());
    EXPECT_FALSE(client.stats().connected);
}

// Token auth against a mock that verifies the JWT like APNs: no client
// certificate, a clock the test moves. Token times stay within the hour
// before the real now, as the mock checks them against its own clock.
class ApnsClientTokenTest : public ApnsClientTest {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/test-apns-client-token-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        dir_ = pattern;
        const test::Key key = test::make_ec_key();
        key_file_ = dir_ + "/AuthKey_ABC123DEFG.p8";
        public_key_file_ = dir_ + "/public.pem";
        std::ofstream(key_file_) << test::private_key_pem(key.get());
        std::ofstream(public_key_file_) << test::public_key_pem(key.get());

        MockApnsConfig config = apple_like_mock_config();
        config.client_ca_file.clear(); // Apple does not ask for a certificate then
        config.token_auth.emplace();
        config.token_auth->key_file = public_key_file_;
        config.token_auth->key_id = "ABC123DEFG";
        config.token_auth->team_id = "DEF123GHIJ";
        config.token_auth->topics = {"com.example.mail"};
        token_mock_ = std::make_unique<MockApnsServer>(config);
        token_mock_->start();
        now_ = std::chrono::system_clock::now() - 55min;
    }
    void TearDown() override {
        client_.reset();
        token_mock_.reset();
        std::filesystem::remove_all(dir_);
    }

    ApnsSettings token_settings() {
        ApnsSettings s = settings();
        s.port = token_mock_->port();
        s.cert_file.clear();
        s.key_file.clear();
        s.token_key_file = key_file_;
        s.key_id = "ABC123DEFG";
        s.team_id = "DEF123GHIJ";
        s.topic = "com.example.mail";
        return s;
    }

    ApnsClient &started_token_client(const ApnsSettings &s) {
        ProviderToken token = ProviderToken::load(s, [this] { return now_; });
        client_ = std::make_unique<ApnsClient>(loop_, s, TlsContext::load(s), std::move(token),
                                               [this](LogLevel level, std::string_view message) {
                                                   log_.emplace_back(level, std::string(message));
                                               });
        client_->start();
        EXPECT_TRUE(loop_.run_until([&] { return client_->stats().connected; }, failure_deadline));
        return *client_;
    }

    // The provider tokens of every request, accepted or refused.
    std::set<std::string> tokens_seen() {
        std::set<std::string> tokens;
        for (const MockApnsRequest &request : token_mock_->requests())
            tokens.insert(request.provider_token);
        for (const MockApnsRequest &request : token_mock_->refused_requests())
            tokens.insert(request.provider_token);
        return tokens;
    }

    std::map<std::string, int> refused_per_token() {
        std::map<std::string, int> counts;
        for (const MockApnsRequest &request : token_mock_->refused_requests())
            counts[request.device_token]++;
        return counts;
    }

    bool logged(LogLevel level, const std::string &text) {
        for (const auto &[logged_level, message] : log_) {
            if (logged_level == level && message.find(text) != std::string::npos)
                return true;
        }
        return false;
    }

    std::int64_t unix_seconds(std::chrono::system_clock::time_point time) {
        return std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count();
    }

    std::string dir_;
    std::string key_file_;
    std::string public_key_file_;
    std::unique_ptr<MockApnsServer> token_mock_;
    std::chrono::system_clock::time_point now_;
};

TEST_F(ApnsClientTokenTest, EveryRequestCarriesAVerifiedTokenAndNoCertificate) {
    ApnsClient &client = started_token_client(token_settings());
    EXPECT_EQ(client.topic(), "com.example.mail");
    for (int i = 0; i < 3; i++)
        send(token(i));
    ASSERT_TRUE(wait_done(3));
    const std::vector<MockApnsRequest> requests = token_mock_->requests();
    ASSERT_EQ(requests.size(), 3u);
    for (const MockApnsRequest &request : requests) {
        SCOPED_TRACE(request.device_token);
        EXPECT_EQ(outcome(request.device_token).result, Result::delivered);
        EXPECT_EQ(request.client_subject, "") << "no client certificate with token auth";
        EXPECT_EQ(request.headers.at("apns-topic"), "com.example.mail");
        EXPECT_TRUE(request.headers.at("authorization").starts_with("bearer "));
        EXPECT_EQ(request.token_issued_at, unix_seconds(now_));
    }
    EXPECT_EQ(tokens_seen().size(), 1u) << "one token for all";
    EXPECT_EQ(client.provider_token_age(), std::chrono::seconds{0});
    now_ += 90s;
    EXPECT_EQ(client.provider_token_age(), std::chrono::seconds{90});
}

TEST_F(ApnsClientTokenTest, ANewTokenIsSignedOnScheduleNotBefore) {
    started_token_client(token_settings()); // token_renew_after: 50 min
    const std::int64_t first_issued = unix_seconds(now_);
    const std::vector<std::chrono::minutes> steps = {10min, 39min, 1min, 4min};
    const std::vector<std::int64_t> expected_iat = {first_issued, first_issued,
                                                    first_issued + 50 * 60, first_issued + 50 * 60};
    for (std::size_t i = 0; i < steps.size(); i++) {
        SCOPED_TRACE(i);
        now_ += steps[i];
        send(token(static_cast<int>(i)));
        ASSERT_TRUE(wait_done(i + 1));
        EXPECT_EQ(outcome(token(static_cast<int>(i))).result, Result::delivered);
        EXPECT_EQ(token_mock_->requests().at(i).token_issued_at, expected_iat[i]);
    }
    EXPECT_EQ(tokens_seen().size(), 2u);
}

TEST_F(ApnsClientTokenTest, ExpiredProviderTokenIsRenewedAndThePushesRetried) {
    ApnsClient &client = started_token_client(token_settings());
    send(token(0));
    ASSERT_TRUE(wait_done(1));
    token_mock_->expire_provider_tokens();
    now_ += 21min; // older than Apple's 20-minute limit, younger than renew_after
    for (int i = 1; i <= 5; i++)
        send(token(i));
    ASSERT_TRUE(wait_done(6));
    for (int i = 1; i <= 5; i++) {
        SCOPED_TRACE(i);
        EXPECT_EQ(outcome(token(i)).result, Result::delivered);
        EXPECT_EQ(requests_per_token_on(*token_mock_)[token(i)], 1) << "sent once accepted";
        EXPECT_EQ(refused_per_token()[token(i)], 1) << "refused once before";
    }
    EXPECT_EQ(tokens_seen().size(), 2u) << "one renewal for all the pushes refused";
    EXPECT_EQ(client.stats().token_renewals, 1u);
    EXPECT_TRUE(logged(LogLevel::info, "expired; signed a new one"));
    EXPECT_EQ(token_mock_->requests().back().token_issued_at, unix_seconds(now_));
}

TEST_F(ApnsClientTokenTest, ATokenYoungerThanTwentyMinutesIsNotRenewedWhenApnsCallsItExpired) {
    ApnsClient &client = started_token_client(token_settings());
    send(token(0));
    ASSERT_TRUE(wait_done(1));
    token_mock_->expire_provider_tokens();
    now_ += 19min;
    send(token(1));
    send(token(2));
    ASSERT_TRUE(wait_done(3));
    for (int i : {1, 2}) {
        SCOPED_TRACE(i);
        EXPECT_EQ(outcome(token(i)).result, Result::rejected);
        EXPECT_EQ(outcome(token(i)).reason, "ExpiredProviderToken");
    }
    EXPECT_EQ(token_mock_->requests().size(), 1u);
    EXPECT_EQ(token_mock_->refused_requests().size(), 2u) << "not resent with the same token";
    EXPECT_EQ(tokens_seen().size(), 1u);
    EXPECT_EQ(client.stats().token_renewals, 0u);
    std::size_t errors = 0;
    for (const auto &[level, message] : log_)
        errors += level == LogLevel::error && message.find("clock") != std::string::npos;
    EXPECT_EQ(errors, 1u) << "logged once per token, not per push";

    // Once the token is old enough the next refusal renews it, and right
    // after that a refusal of the new token renews nothing.
    now_ += 2min;
    send(token(3));
    ASSERT_TRUE(wait_done(4));
    EXPECT_EQ(outcome(token(3)).result, Result::delivered);
    token_mock_->expire_provider_tokens();
    now_ += 5min;
    send(token(4));
    ASSERT_TRUE(wait_done(5));
    EXPECT_EQ(outcome(token(4)).result, Result::rejected);
    EXPECT_EQ(client.stats().token_renewals, 1u);
    EXPECT_EQ(tokens_seen().size(), 2u);
}

TEST_F(ApnsClientTokenTest, InvalidProviderTokenIsLoggedOnceAndRejected) {
    struct Row {
        std::string name;
        std::function<void(ApnsSettings &)> change;
        std::string logged;
    };
    const std::vector<Row> rows = {
        {"wrong key id", [](ApnsSettings &s) { s.key_id = "WRONG12345"; }, "WRONG12345"},
        {"wrong team", [](ApnsSettings &s) { s.team_id = "WRONG67890"; }, "WRONG67890"},
        {"another key",
         [this](ApnsSettings &s) {
             s.token_key_file = dir_ + "/other.p8";
             std::ofstream(s.token_key_file) << test::private_key_pem(test::make_ec_key().get());
         },
         "other.p8"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        ApnsSettings s = token_settings();
        row.change(s);
        log_.clear();
        outcomes_.clear();
        done_calls_ = 0;
        token_mock_->clear_requests();
        started_token_client(s);
        send(token(1));
        send(token(2));
        ASSERT_TRUE(wait_done(2));
        for (int i : {1, 2}) {
            EXPECT_EQ(outcome(token(i)).result, Result::rejected);
            EXPECT_EQ(outcome(token(i)).http_status, 403);
            EXPECT_EQ(outcome(token(i)).reason, "InvalidProviderToken");
        }
        EXPECT_EQ(token_mock_->requests_refused(), 2u) << "not retried";
        EXPECT_EQ(token_mock_->requests_received(), 0u);
        std::size_t errors = 0;
        for (const auto &[level, message] : log_) {
            if (level == LogLevel::error) {
                errors++;
                EXPECT_NE(message.find("InvalidProviderToken"), std::string::npos) << message;
                EXPECT_NE(message.find(row.logged), std::string::npos) << message;
            }
        }
        EXPECT_EQ(errors, 1u);
    }
}

TEST_F(ApnsClientTokenTest, WithoutCertificateOrTokenTheClientRefusesToStart) {
    const ApnsSettings s = token_settings();
    EXPECT_THROW(ApnsClient client(loop_, s, TlsContext::load(s)), xaps::Error);
}

} // namespace
} // namespace xaps
