// End to end, one per kind of APNs credential: a real Dovecot whose worker
// authenticates to the mock APNs with a PKCS#12 file, or with a provider token
// (ES256 JWT from a .p8 key) that the mock verifies like Apple, or with the
// certificate `doveadm xaps provision` obtained from the mock certificate
// service for xaps_apple_id; and a broken or missing credential, with which
// Dovecot still starts and delivers mail while the worker says in the log
// what is wrong and registrations are refused.
//
// doveadm runs as test-e2e-doveadm runs it: in a private mount namespace where
// a directory holding the built module is bind-mounted over doveadm's fixed
// module directory. Here the test CA is also bind-mounted over the system's
// trust store, so that the mock certificate service is trusted as Apple's was.
#include "caservice-test-keys.h"
#include "e2e-environment.h"
#include "e2e-processes.h"
#include "e2e-refusals.h"
#include "mock-caservice-server.h"
#include "test-files.h"
#include "imap-client.h"
#include "lmtp-client.h"
#include "worker-client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
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
constexpr const char *apple_id = "admin@example.com";
// SHA-256 of "password", as `doveadm xaps hash-password` prints it.
constexpr const char *apple_password_hash =
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
// The mail certificate's UID the mock certificate service issues (its default
// account UUID): the APNs topic of a provisioned certificate.
constexpr const char *provisioned_topic =
    "com.apple.mail.XServer.6a1d3c52-9f4e-4b7a-8c2d-0e5f4a3b2c1d";

#ifndef XAPS_DOVEADM_MODULE_PATH
#error "meson must define XAPS_DOVEADM_MODULE_PATH"
#endif
constexpr const char *doveadm_binary = "/usr/bin/doveadm";
constexpr const char *doveadm_module_dir = "/usr/lib/dovecot/modules/doveadm";
// Where Debian's libcurl looks for trust anchors when none are configured.
constexpr const char *system_trust_store = "/etc/ssl/certs/ca-certificates.crt";
constexpr auto doveadm_time_limit = 90s;

struct DoveadmRun {
    int exit_code = -1; // -1: killed or did not exit normally
    std::string out;
    std::string err;
};

// Runs `doveadm <args>` in a private mount namespace with the built module
// and the test CA bind-mounted (see the top of this file); its output goes
// through files in output_dir. Killed after doveadm_time_limit.
DoveadmRun run_doveadm(const std::string &module_dir, const std::string &output_dir,
                       const std::vector<std::string> &args) {
    std::vector<std::string> full_args = {doveadm_binary};
    full_args.insert(full_args.end(), args.begin(), args.end());
    std::vector<const char *> argv;
    for (const auto &arg : full_args) {
        argv.push_back(arg.c_str());
    }
    argv.push_back(nullptr);
    const std::string out_path = output_dir + "/doveadm.out";
    const std::string err_path = output_dir + "/doveadm.err";
    const std::string ca_file = std::string(e2e::pki_dir) + "/ca.pem";

    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
        // Only async-signal-safe calls from here on.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (out_fd < 0 || err_fd < 0 || null_fd < 0) {
            ::_exit(125);
        }
        ::dup2(null_fd, STDIN_FILENO);
        ::dup2(out_fd, STDOUT_FILENO);
        ::dup2(err_fd, STDERR_FILENO);
        if (::unshare(CLONE_NEWNS) != 0 ||
            ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::mount(module_dir.c_str(), doveadm_module_dir, nullptr, MS_BIND, nullptr) != 0 ||
            ::mount(ca_file.c_str(), system_trust_store, nullptr, MS_BIND, nullptr) != 0) {
            static const char message[] = "cannot bind-mount the doveadm module directory or "
                                          "the trust store\n";
            (void)!::write(STDERR_FILENO, message, sizeof(message) - 1);
            ::_exit(126);
        }
        ::execv(argv[0], const_cast<char *const *>(argv.data()));
        ::_exit(127);
    }
    DoveadmRun run;
    if (pid < 0) {
        ADD_FAILURE() << "fork failed";
        return run;
    }
    const auto deadline = std::chrono::steady_clock::now() + doveadm_time_limit;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            ADD_FAILURE() << "doveadm did not finish within the time limit";
            break;
        }
        std::this_thread::sleep_for(20ms);
    }
    if (WIFEXITED(status)) {
        run.exit_code = WEXITSTATUS(status);
    }
    run.out = read_file(out_path);
    run.err = read_file(err_path);
    return run;
}

mode_t mode_of(const std::string &path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

uid_t owner_of(const std::string &path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_uid;
}

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
        if (apns_) {
            e2e::expect_no_refusals(*apns_);
        }
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
        WorkerClient worker(dovecot_->admin_socket_path());
        std::map<std::string, std::string> rows;
        for (const auto &reply : worker.request({"STATUS"})) {
            if (reply.is_row() && reply.fields.size() == 2) {
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

    // The mock certificate service, trusted through the test CA and issuing
    // push certificates the mock APNs accepts (signed by the same CA).
    void start_caservice() {
        vendor_ = write_vendor_files(credentials_->path());
        MockCaServiceConfig config;
        config.cert_file = std::string(e2e::pki_dir) + "/server.pem";
        config.key_file = std::string(e2e::pki_dir) + "/server.key";
        config.issuer_cert_file = std::string(e2e::pki_dir) + "/ca.pem";
        config.issuer_key_file = std::string(e2e::pki_dir) + "/ca.key";
        config.vendor_chain_file = vendor_.chain_pem;
        config.apple_id = apple_id;
        config.password_hash = apple_password_hash;
        caservice_ = std::make_unique<MockCaServiceServer>(config);
        caservice_->start();
    }

    std::map<std::string, std::string> apple_id_settings() const {
        return {{"xaps_apple_id", apple_id},
                {"xaps_apple_password_hash", apple_password_hash},
                {"xaps_caservice_url", caservice_->url()},
                {"xaps_caservice_vendor_key_file", vendor_.key_pem},
                {"xaps_caservice_vendor_chain_file", vendor_.chain_pem}};
    }

    // `doveadm -c <the instance's conf> <args>` with the built module.
    DoveadmRun doveadm(const std::vector<std::string> &args) {
        if (!module_dir_) {
            module_dir_ = std::make_unique<TemporaryDirectory>("xaps-doveadm-modules-");
            std::filesystem::create_symlink(
                std::filesystem::absolute(XAPS_DOVEADM_MODULE_PATH),
                std::filesystem::path(module_dir_->path()) /
                    std::filesystem::path(XAPS_DOVEADM_MODULE_PATH).filename());
        }
        std::vector<std::string> full_args = {"-c", dovecot_->conf_path()};
        full_args.insert(full_args.end(), args.begin(), args.end());
        return run_doveadm(module_dir_->path(), credentials_->path(), full_args);
    }

    std::unique_ptr<TemporaryDirectory> credentials_;
    std::unique_ptr<TemporaryDirectory> module_dir_;
    std::unique_ptr<MockApnsServer> apns_;
    VendorFiles vendor_;
    std::unique_ptr<MockCaServiceServer> caservice_;
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
    config.token_auth->topics = {token_topic};
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

    EXPECT_TRUE(dovecot_->wait_for_log("Warning: APNs certificate " + cert + " expires on ", 60s))
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
    make_client_certificate(cert, key, 15s);
    start_dovecot({{"xaps_apns_cert_file", cert}, {"xaps_apns_key_file", key}});
    EXPECT_TRUE(dovecot_->wait_for_log("expires on ", 60s)) << dovecot_->log();

    EXPECT_TRUE(dovecot_->wait_for_log("push is disabled until it is renewed", 60s))
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
        EXPECT_TRUE(dovecot_->wait_for_log("push disabled", 60s)) << dovecot_->log();
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

TEST_F(E2eCredentials, AppleIdWithNothingProvisionedStartsWithoutPushAndSaysWhatToRun) {
    start_apns(e2e::mock_apns_config());
    start_caservice();
    // Were the worker to ask the service at start, it would not be up in time.
    caservice_->set_answer_delay(60s);
    start_dovecot(apple_id_settings());

    EXPECT_TRUE(dovecot_->wait_for_log("run `doveadm xaps provision`", 60s)) << dovecot_->log();
    const auto status = worker_status();
    EXPECT_EQ(status.count("credential") ? status.at("credential") : "", "apple-id");
    const std::string problem =
        status.count("credential_problem") ? status.at("credential_problem") : "";
    EXPECT_NE(problem.find(dovecot_->db_path() + "/caservice/mail.pem"), std::string::npos)
        << problem;
    EXPECT_NE(problem.find("run `doveadm xaps provision`"), std::string::npos) << problem;
    EXPECT_EQ(status.count("apns_connected") ? status.at("apns_connected") : "", "no");

    ImapClient imap(dovecot_->imap_port());
    ImapResponse reply = register_iphone(imap);
    EXPECT_TRUE(reply.tagged.starts_with(reply.tag + " NO [UNAVAILABLE]")) << reply.tagged;
    SmtpReply delivery = deliver_to_alice();
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    EXPECT_EQ(caservice_->requests().size(), 0u) << "the worker never asks the service";
    EXPECT_EQ(apns_->connections_accepted(), 0u);
}

TEST_F(E2eCredentials, ProvisionedCertificateIsPushedWithAfterTheReloadItTriggers) {
    start_apns(e2e::mock_apns_config());
    start_caservice();
    start_dovecot(apple_id_settings());
    const pid_t unprovisioned_worker = e2e::worker_pid(*dovecot_);
    ASSERT_GT(unprovisioned_worker, 0);

    DoveadmRun run = doveadm({"xaps", "provision"});
    ASSERT_EQ(run.exit_code, 0) << run.err << "\n" << dovecot_->log();
    EXPECT_NE(run.out.find("action=issued"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("reloaded=yes"), std::string::npos) << run.out;
    EXPECT_NE(run.err.find("requesting push certificates for Apple ID admin@example.com"),
              std::string::npos)
        << "what it asks for is on stderr: " << run.err;
    const std::string cert = dovecot_->db_path() + "/caservice/mail.pem";
    const std::string key = dovecot_->db_path() + "/caservice/mail.key";
    EXPECT_NE(run.out.find("certificate=" + cert), std::string::npos) << run.out;
    EXPECT_EQ(mode_of(cert), 0600u);
    EXPECT_EQ(mode_of(key), 0600u);
    EXPECT_EQ(mode_of(dovecot_->db_path() + "/caservice"), 0700u);
    EXPECT_EQ(owner_of(key), 0u) << "root's only";
    std::vector<MockCaServiceRequest> requests = caservice_->requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].path, "/pushcert/caservice/new");
    EXPECT_EQ(requests[0].error_code, 0) << requests[0].error_message;

    // The master's reload replaced the worker with one that loaded it.
    const pid_t provisioned_worker =
        e2e::wait_for_serving_worker(*dovecot_, unprovisioned_worker, 15s);
    ASSERT_GT(provisioned_worker, 0) << dovecot_->log();
    const MockApnsRequest push = register_and_push(provisioned_topic);
    EXPECT_EQ(push.client_uid, provisioned_topic) << "authenticated with the provisioned one";
    auto status = worker_status();
    EXPECT_EQ(status.count("credential") ? status.at("credential") : "", "apple-id");
    EXPECT_EQ(status.count("credential_problem"), 0u) << status["credential_problem"];
    EXPECT_EQ(status.count("certificate_expiry"), 1u);

    // Daily runs keep a certificate that is not due and leave Dovecot alone.
    run = doveadm({"xaps", "provision"});
    EXPECT_EQ(run.exit_code, 0) << run.err;
    EXPECT_NE(run.out.find("action=kept"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("reloaded=no"), std::string::npos) << run.out;
    EXPECT_EQ(caservice_->requests().size(), 1u);

    // --force renews it; --no-reload leaves the running worker alone.
    const std::string issued = read_file(cert);
    run = doveadm({"xaps", "provision", "--force", "--no-reload"});
    EXPECT_EQ(run.exit_code, 0) << run.err;
    EXPECT_NE(run.out.find("action=renewed"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("reloaded=no"), std::string::npos) << run.out;
    requests = caservice_->requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[1].path, "/pushcert/caservice/renew");
    EXPECT_NE(read_file(cert), issued);
    EXPECT_EQ(mode_of(cert), 0600u);
    EXPECT_EQ(e2e::worker_pid(*dovecot_), provisioned_worker);
}

TEST_F(E2eCredentials, ProvisionFailureIsAClearErrorAndWritesNothing) {
    start_apns(e2e::mock_apns_config());
    start_caservice();
    caservice_->set_error(discontinued_service_error());
    start_dovecot(apple_id_settings());

    DoveadmRun run = doveadm({"xaps", "provision"});
    EXPECT_EQ(run.exit_code, EX_CONFIG) << run.out << run.err;
    EXPECT_NE(run.err.find("xaps provision: "), std::string::npos) << run.err;
    EXPECT_NE(run.err.find("answered error -80010"), std::string::npos) << run.err;
    EXPECT_EQ(run.out, "");
    EXPECT_FALSE(std::filesystem::exists(dovecot_->db_path() + "/caservice/mail.pem"));
    EXPECT_EQ(caservice_->requests().size(), 1u);
}

} // namespace
