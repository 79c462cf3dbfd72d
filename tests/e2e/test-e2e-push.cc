// End to end: a real Dovecot with the xaps plugin and worker, a simulated
// iPhone registering over IMAP, a mail delivered over LMTP, and the mock APNs
// server (TLS with client certificates, HTTP/2) receiving the push.
#include "e2e-fixture.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <charconv>
#include <chrono>
#include <ctime>
#include <memory>
#include <regex>
#include <thread>

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;
using e2e::joined;
using e2e::push_timeout;

// "<tag> OK XAPPLEPUSHSERVICE completed." with Dovecot's optional " (0.001 + 0.000 secs)".
std::regex completed_line(const std::string &tag) {
    return std::regex(tag + R"( OK XAPPLEPUSHSERVICE completed( \([0-9.+ ]+ secs\))?\.)");
}

std::int64_t unix_now() {
    return static_cast<std::int64_t>(std::time(nullptr));
}

// The two ways mail users are set up: virtual users sharing one mail uid
// (vmail), and system users whose mail processes each run as their own uid.
enum class MailUsers { virtual_users, system_users };

std::string mail_users_name(const ::testing::TestParamInfo<MailUsers> &info) {
    return info.param == MailUsers::system_users ? "SystemUsers" : "VirtualUsers";
}

class E2ePush : public e2e::E2eTest, public ::testing::WithParamInterface<MailUsers> {
protected:
    DovecotOptions push_options() const {
        DovecotOptions options = e2e::dovecot_options(apns_->port());
        options.system_users = GetParam() == MailUsers::system_users;
        return options;
    }
};

TEST_P(E2ePush, RegisteredDeviceGetsPushForNewMail) {
    start_dovecot(push_options());
    const std::string topic = e2e::apns_topic();
    ASSERT_FALSE(topic.empty());

    ImapClient imap(dovecot_->imap_port());
    EXPECT_FALSE(parse_capabilities(imap.greeting()).contains("XAPPLEPUSHSERVICE"))
        << imap.greeting();
    EXPECT_FALSE(imap.capabilities().contains("XAPPLEPUSHSERVICE"));
    ImapResponse login = imap.login("alice", DovecotInstance::password);
    ASSERT_TRUE(login.ok()) << login.tagged;
    ASSERT_TRUE(imap.capabilities().contains("XAPPLEPUSHSERVICE"));

    ImapResponse reply = imap.command(e2e::xapplepushservice_command());
    const std::vector<std::string> expected_untagged{
        R"(* XAPPLEPUSHSERVICE "mailbox" "INBOX")",
        R"(* XAPPLEPUSHSERVICE "mailbox" "Sent Messages")",
        R"(* XAPPLEPUSHSERVICE "aps-version" "2" "aps-topic" ")" + topic + "\"",
    };
    EXPECT_EQ(reply.untagged, expected_untagged);
    // Dovecot itself appends its timing to every tagged OK that ends in ".".
    EXPECT_TRUE(std::regex_match(reply.tagged, completed_line(reply.tag))) << reply.tagged;

    // The OK promised a stored registration.
    const std::int64_t registered_after = unix_now();
    std::vector<xaps::Registration> stored =
        WorkerClient(dovecot_->admin_socket_path()).list("alice");
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0].user, "alice");
    EXPECT_EQ(stored[0].account_id, e2e::iphone_account_id);
    EXPECT_EQ(stored[0].device_token, e2e::iphone_device_token);
    EXPECT_EQ(stored[0].subtopic, "com.apple.mobilemail");
    EXPECT_EQ(stored[0].aps_version, 2u);
    EXPECT_EQ(stored[0].mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));
    EXPECT_NEAR(static_cast<double>(stored[0].registered_at), static_cast<double>(registered_after),
                60.0);

    // bob has no device: his mail must not cause a push.
    SmtpReply bob_delivery = deliver_to("bob@example.com");
    EXPECT_EQ(bob_delivery.code, 250) << bob_delivery.text();
    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    const std::int64_t delivered_at = unix_now();

    std::vector<MockApnsRequest> pushes = pushes_settled(1);
    ASSERT_EQ(pushes.size(), 1u) << "one new mail, one push, none for bob";
    const MockApnsRequest &push = pushes[0];
    EXPECT_EQ(push.method, "POST");
    EXPECT_EQ(push.path, std::string("/3/device/") + e2e::iphone_device_token);
    EXPECT_EQ(push.client_uid, topic) << "the worker must authenticate with the client certificate";
    EXPECT_EQ(push.headers.count("apns-topic") ? push.headers.at("apns-topic") : "", topic);
    EXPECT_EQ(push.headers.count("apns-push-type") ? push.headers.at("apns-push-type") : "",
              "background");
    ASSERT_TRUE(push.headers.count("apns-expiration"));
    const std::string &expiration_text = push.headers.at("apns-expiration");
    std::int64_t expiration = 0;
    auto [end, error] = std::from_chars(
        expiration_text.data(), expiration_text.data() + expiration_text.size(), expiration);
    ASSERT_TRUE(error == std::errc{} && end == expiration_text.data() + expiration_text.size())
        << expiration_text;
    EXPECT_GT(expiration, delivered_at);
    EXPECT_LE(expiration, delivered_at + 24 * 3600 + 60);

    Json::Value expected_body;
    expected_body["aps"]["account-id"] = e2e::iphone_account_id;
    // The mailbox it is about: MD5 of "INBOX" (openssl md5), as iOS keys it.
    expected_body["aps"]["m"].append("7E33429F656F1E6E9D79B29C3F82C57E");
    const std::optional<Json::Value> body = e2e::parse_json(push.body);
    ASSERT_TRUE(body.has_value()) << push.body;
    EXPECT_EQ(*body, expected_body) << push.body;

    // The session is still usable after all this.
    EXPECT_TRUE(imap.command("NOOP").ok());
}

// "Fast" is the path taken, not a time: the plugin learns at connect() that
// nobody listens and answers at once, where a worker that does not answer
// would cost the client the plugin's reply timeout and a warning saying so.
TEST_P(E2ePush, UnreachableWorkerFailsRegistrationFastAndKeepsDelivering) {
    DovecotOptions options = push_options();
    options.enable_worker = false; // no service xaps: its socket does not exist
    start_dovecot(std::move(options));

    std::unique_ptr<ImapClient> imap = login();
    ASSERT_TRUE(imap->capabilities().contains("XAPPLEPUSHSERVICE"));

    ImapResponse reply = imap->command(e2e::xapplepushservice_command());
    EXPECT_TRUE(reply.tagged.starts_with(reply.tag + " NO [UNAVAILABLE]")) << reply.tagged;
    EXPECT_EQ(joined(reply.untagged), "");
    EXPECT_TRUE(imap->command("NOOP").ok());
    EXPECT_TRUE(dovecot_->wait_for_log("registration failed: ", push_timeout)) << dovecot_->log();
    const std::string log = dovecot_->log();
    const std::size_t failed_at = log.find("registration failed: ");
    ASSERT_NE(failed_at, std::string::npos) << log;
    EXPECT_NE(log.substr(failed_at, log.find('\n', failed_at) - failed_at).find("connect("),
              std::string::npos)
        << "refused at connect(), not after waiting for a reply\n"
        << log;
    EXPECT_EQ(dovecot_->log().find("no reply from the worker"), std::string::npos)
        << dovecot_->log();

    SmtpReply delivery = deliver_to("alice@example.com");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    // Without a worker nothing can push, now or later.
    EXPECT_EQ(apns_->requests_received(), 0u);
}

INSTANTIATE_TEST_SUITE_P(MailUsers, E2ePush,
                         ::testing::Values(MailUsers::virtual_users, MailUsers::system_users),
                         mail_users_name);

} // namespace
