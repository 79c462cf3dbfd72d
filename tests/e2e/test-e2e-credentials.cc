// End to end, one per kind of APNs credential: a real Dovecot whose worker
// authenticates to the mock APNs with a PKCS#12 file, or with a provider token
// (ES256 JWT from a .p8 key) that the mock verifies like Apple; and a broken
// credential, with which Dovecot still starts and delivers mail while the
// worker says in the log what is wrong and registrations are refused.
#include "e2e-environment.h"
#include "test-files.h"
#include "imap-client.h"
#include "lmtp-client.h"
#include "worker-client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;

constexpr auto push_timeout = 10s;
constexpr const char *token_topic = "com.apple.mail.XServer.7a3e0c55-2f41-4c1e-9d1b-0f8e6a5c4b3a";
constexpr const char *key_id = "ABC123DEFG";
constexpr const char *team_id = "DEF123GHIJ";

std::string joined(const std::vector<std::string> &lines) {
    std::string text;
    for (const auto &line : lines) {
        text += line + "\n";
    }
    return text;
}

void write_private(const std::string &path, const std::string &content) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    ::chmod(path.c_str(), 0600); // root's, as an admin would keep it
}

// A fresh .p8 key (PKCS#8 PEM, EC P-256) and its public half for the mock.
void make_token_key(const std::string &p8_path, const std::string &public_path) {
    EVP_PKEY *key = EVP_EC_gen("P-256");
    ASSERT_NE(key, nullptr);
    FILE *out = std::fopen(p8_path.c_str(), "w");
    ASSERT_NE(out, nullptr);
    PEM_write_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(out);
    ::chmod(p8_path.c_str(), 0600);
    out = std::fopen(public_path.c_str(), "w");
    ASSERT_NE(out, nullptr);
    PEM_write_PUBKEY(out, key);
    std::fclose(out);
    EVP_PKEY_free(key);
}

// A push certificate like Apple's (UID = the test topic) for a fresh key,
// signed by the test CA, valid from an hour ago for `lifetime` from now.
void make_client_certificate(const std::string &cert_path, const std::string &key_path,
                             std::chrono::seconds lifetime) {
    const std::string pki = e2e::pki_dir;
    FILE *in = std::fopen((pki + "/ca.pem").c_str(), "r");
    ASSERT_NE(in, nullptr);
    X509 *ca = PEM_read_X509(in, nullptr, nullptr, nullptr);
    std::fclose(in);
    in = std::fopen((pki + "/ca.key").c_str(), "r");
    ASSERT_NE(in, nullptr);
    EVP_PKEY *ca_key = PEM_read_PrivateKey(in, nullptr, nullptr, nullptr);
    std::fclose(in);
    ASSERT_TRUE(ca != nullptr && ca_key != nullptr);

    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), static_cast<long>(std::time(nullptr)));
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(lifetime.count()));
    X509_NAME *name = X509_get_subject_name(cert);
    const std::string topic = e2e::apns_topic();
    X509_NAME_add_entry_by_NID(name, NID_userId, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char *>(topic.c_str()), -1, -1, 0);
    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char *>("Apple Push Services"), -1,
                               -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(ca));
    X509_set_pubkey(cert, key);
    ASSERT_GT(X509_sign(cert, ca_key, EVP_sha256()), 0);

    FILE *out = std::fopen(cert_path.c_str(), "w");
    PEM_write_X509(out, cert);
    std::fclose(out);
    out = std::fopen(key_path.c_str(), "w");
    PEM_write_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(out);
    ::chmod(key_path.c_str(), 0600);
    X509_free(cert);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
}

class E2eCredentials : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "end-to-end tests run Dovecot and create users: they need root";
        }
        credentials_ = std::make_unique<TemporaryDirectory>("xaps-credentials-");
    }

    void TearDown() override {
        if (!dovecot_) {
            return;
        }
        dovecot_->stop();
        EXPECT_EQ(joined(dovecot_->log_problems()), "") << "Dovecot's log:\n" << dovecot_->log();
    }

    std::string credential_path(const std::string &name) const {
        return credentials_->path() + "/" + name;
    }

    void start_apns(MockApnsConfig config) {
        apns_ = std::make_unique<MockApnsServer>(std::move(config));
        apns_->start();
    }

    // Dovecot with the test PKI's trust anchors but, instead of the default
    // PEM certificate, the credential settings given here.
    void start_dovecot(const std::map<std::string, std::string> &credential_settings) {
        DovecotOptions options = e2e::dovecot_options(apns_->port());
        options.plugin_settings["xaps_apns_cert_file"] = "";
        options.plugin_settings["xaps_apns_key_file"] = "";
        for (const auto &[key, value] : credential_settings) {
            options.plugin_settings[key] = value;
        }
        dovecot_ = std::make_unique<DovecotInstance>(std::move(options));
        dovecot_->start();
    }

    ImapResponse register_iphone(ImapClient &imap) {
        ImapResponse login = imap.login("alice", DovecotInstance::password);
        EXPECT_TRUE(login.ok()) << login.tagged;
        EXPECT_TRUE(imap.capabilities().contains("XAPPLEPUSHSERVICE"))
            << "a credential is configured, working or not";
        return imap.command(e2e::xapplepushservice_command());
    }

    SmtpReply deliver_to_alice() {
        LmtpClient lmtp(dovecot_->lmtp_port());
        return lmtp.deliver("sender@example.net", "alice@example.com",
                            make_test_message("sender@example.net", "alice@example.com", "Hello",
                                              "A mail that should wake up the phone.\n"));
    }

    std::map<std::string, std::string> worker_status() {
        WorkerClient worker(dovecot_->worker_socket_path());
        std::map<std::string, std::string> rows;
        for (const auto &reply : worker.request(xaps::protocol::Status{})) {
            if (reply.status == xaps::protocol::ReplyStatus::row && reply.fields.size() == 2) {
                rows[reply.fields[0]] = reply.fields[1];
            }
        }
        return rows;
    }

    // Registration, a mail, and the one push it causes.
    MockApnsRequest register_and_push(const std::string &topic) {
        ImapClient imap(dovecot_->imap_port());
        ImapResponse reply = register_iphone(imap);
        EXPECT_TRUE(reply.ok()) << reply.tagged << "\n" << dovecot_->log();
        EXPECT_EQ(reply.untagged.empty() ? "" : reply.untagged.back(),
                  R"(* XAPPLEPUSHSERVICE "aps-version" "2" "aps-topic" ")" + topic + "\"");
        SmtpReply delivery = deliver_to_alice();
        EXPECT_EQ(delivery.code, 250) << delivery.text();
        EXPECT_TRUE(apns_->wait_for_requests(1, push_timeout)) << dovecot_->log();
        const std::vector<MockApnsRequest> pushes = apns_->requests();
        if (pushes.empty()) {
            ADD_FAILURE() << "no push";
            return {};
        }
        EXPECT_EQ(pushes.size(), 1u);
        EXPECT_EQ(pushes[0].path, std::string("/3/device/") + e2e::iphone_device_token);
        return pushes[0];
    }

    std::unique_ptr<TemporaryDirectory> credentials_;
    std::unique_ptr<MockApnsServer> apns_;
    std::unique_ptr<DovecotInstance> dovecot_;
};

TEST_F(E2eCredentials, Pkcs12CertificateDeliversAPush) {
    start_apns(e2e::mock_apns_config()); // a client certificate is required
    const std::string p12 = credential_path("apns.p12");
    write_private(p12, read_file(std::string(e2e::pki_dir) + "/client.p12"));
    start_dovecot({{"xaps_apns_p12_file", p12}, {"xaps_apns_p12_password", "test"}});

    const std::string topic = e2e::apns_topic();
    const MockApnsRequest push = register_and_push(topic);
    EXPECT_EQ(push.client_uid, topic) << "authenticated with the certificate from the .p12";
    EXPECT_EQ(push.headers.count("authorization"), 0u);
    EXPECT_EQ(push.headers.count("apns-topic") ? push.headers.at("apns-topic") : "", topic);

    const auto status = worker_status();
    EXPECT_EQ(status.count("credential") ? status.at("credential") : "", "pkcs12");
    const std::string expiry =
        status.count("certificate_expiry") ? status.at("certificate_expiry") : "";
    EXPECT_TRUE(std::regex_match(expiry, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
        << expiry;
    EXPECT_EQ(status.count("token_age_seconds"), 0u);
}

TEST_F(E2eCredentials, TokenAuthDeliversAPushWithAJwtTheMockVerified) {
    const std::string p8 = credential_path("AuthKey_ABC123DEFG.p8");
    const std::string public_key = credential_path("public.pem");
    make_token_key(p8, public_key);
    MockApnsConfig config = e2e::mock_apns_config();
    config.client_ca_file.clear(); // token auth: Apple asks for no certificate
    config.token_auth.emplace();
    config.token_auth->key_file = public_key;
    config.token_auth->key_id = key_id;
    config.token_auth->team_id = team_id;
    start_apns(config);
    start_dovecot({{"xaps_apns_token_key_file", p8},
                   {"xaps_apns_key_id", key_id},
                   {"xaps_apns_team_id", team_id},
                   {"xaps_apns_topic", token_topic}});

    const MockApnsRequest push = register_and_push(token_topic);
    EXPECT_EQ(push.client_subject, "") << "no client certificate with token auth";
    EXPECT_EQ(push.headers.count("apns-topic") ? push.headers.at("apns-topic") : "", token_topic);
    EXPECT_FALSE(push.provider_token.empty()) << "accepted by the mock's verification";
    EXPECT_NEAR(static_cast<double>(push.token_issued_at), static_cast<double>(std::time(nullptr)),
                120.0);

    const auto status = worker_status();
    EXPECT_EQ(status.count("credential") ? status.at("credential") : "", "token");
    EXPECT_EQ(status.count("topic") ? status.at("topic") : "", token_topic);
    ASSERT_EQ(status.count("token_age_seconds"), 1u);
    EXPECT_LT(std::stol(status.at("token_age_seconds")), 120);
    EXPECT_EQ(status.count("certificate_expiry"), 0u);
}

TEST_F(E2eCredentials, ACertificateExpiringWithinThirtyDaysIsAWarningAtStart) {
    start_apns(e2e::mock_apns_config());
    const std::string cert = credential_path("cert.pem");
    const std::string key = credential_path("key.pem");
    make_client_certificate(cert, key, std::chrono::days{9} + 12h);
    start_dovecot({{"xaps_apns_cert_file", cert}, {"xaps_apns_key_file", key}});

    EXPECT_TRUE(dovecot_->wait_for_log("Warning: APNs certificate " + cert + " expires on ", 5s))
        << dovecot_->log();
    EXPECT_NE(dovecot_->log().find(", in 9 days: renew it"), std::string::npos) << dovecot_->log();
    // doveadm xaps status shows the same warning.
    auto status = worker_status();
    EXPECT_NE(status["certificate_warning"].find(", in 9 days: renew it"), std::string::npos);
    register_and_push(e2e::apns_topic()); // still pushing meanwhile
}

TEST_F(E2eCredentials, ACertificateThatExpiresWhileRunningDisablesPush) {
    start_apns(e2e::mock_apns_config());
    const std::string cert = credential_path("cert.pem");
    const std::string key = credential_path("key.pem");
    // Long enough for Dovecot to start and the worker to load it while valid.
    make_client_certificate(cert, key, 4s);
    start_dovecot({{"xaps_apns_cert_file", cert}, {"xaps_apns_key_file", key}});
    EXPECT_TRUE(dovecot_->wait_for_log("expires on ", 5s)) << dovecot_->log();

    EXPECT_TRUE(dovecot_->wait_for_log("push is disabled until it is renewed", 10s))
        << dovecot_->log();
    EXPECT_NE(dovecot_->log().find("Error: APNs certificate " + cert + " expired on "),
              std::string::npos)
        << dovecot_->log();
    ImapClient imap(dovecot_->imap_port());
    ImapResponse reply = register_iphone(imap);
    EXPECT_TRUE(reply.tagged.starts_with(reply.tag + " NO [UNAVAILABLE]")) << reply.tagged;
    SmtpReply delivery = deliver_to_alice();
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    const auto status = worker_status();
    EXPECT_NE((status.count("credential_problem") ? status.at("credential_problem") : "")
                  .find("expired on"),
              std::string::npos);
    EXPECT_EQ(status.count("apns_connected") ? status.at("apns_connected") : "", "no");
}

TEST_F(E2eCredentials, ABrokenCredentialKeepsMailFlowingAndSaysWhatIsWrong) {
    struct Row {
        std::string name;
        std::function<std::map<std::string, std::string>()> settings;
        std::string file;    // the log must name it...
        std::string problem; // ...and the problem
    };
    const std::string pki = e2e::pki_dir;
    const std::vector<Row> rows = {
        {"key of another certificate",
         [&] {
             return std::map<std::string, std::string>{
                 {"xaps_apns_cert_file", pki + "/client.pem"},
                 {"xaps_apns_key_file", pki + "/client-short-topic.key"}};
         },
         pki + "/client-short-topic.key", "the key does not match the certificate"},
        {"wrong PKCS#12 password",
         [&] {
             return std::map<std::string, std::string>{
                 {"xaps_apns_p12_file", pki + "/client.p12"},
                 {"xaps_apns_p12_password", "not-the-password"}};
         },
         pki + "/client.p12", "wrong password"},
        {"token key that is no EC key",
         [&] {
             return std::map<std::string, std::string>{
                 {"xaps_apns_token_key_file", pki + "/client.key"},
                 {"xaps_apns_key_id", key_id},
                 {"xaps_apns_team_id", team_id},
                 {"xaps_apns_topic", token_topic}};
         },
         pki + "/client.key", "not an EC P-256 key"},
    };
    start_apns(e2e::mock_apns_config());
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        start_dovecot(row.settings());
        EXPECT_TRUE(dovecot_->wait_for_log("push disabled", 5s)) << dovecot_->log();
        const std::string log = dovecot_->log();
        EXPECT_NE(log.find(row.file + ": " + row.problem), std::string::npos) << log;

        ImapClient imap(dovecot_->imap_port());
        ImapResponse reply = register_iphone(imap);
        EXPECT_TRUE(reply.tagged.starts_with(reply.tag + " NO [UNAVAILABLE]")) << reply.tagged;
        EXPECT_EQ(joined(reply.untagged), "");
        EXPECT_TRUE(imap.command("NOOP").ok());

        SmtpReply delivery = deliver_to_alice();
        EXPECT_EQ(delivery.code, 250) << delivery.text();
        const auto status = worker_status();
        EXPECT_NE(status.count("credential_problem") ? status.at("credential_problem") : "", "");
        EXPECT_EQ(status.count("apns_connected") ? status.at("apns_connected") : "", "no");

        dovecot_->stop();
        EXPECT_EQ(joined(dovecot_->log_problems()), "") << dovecot_->log();
        dovecot_.reset();
    }
    EXPECT_EQ(apns_->connections_accepted(), 0u) << "no credential, no connection to Apple";
}

} // namespace
