// provision_or_reuse against the simulated certificate service: a real TLS
// server on 127.0.0.1 that verifies the request's vendor signature, Apple ID
// and password hash and CSRs, and issues certificates from the test CA.
#include "caservice-client.h"
#include "temporary-directory.h"
#include "test-files.h"

#include "caservice-crypto.h"
#include "caservice-test-keys.h"
#include "mock-caservice-server.h"
#include "tls-context.h"
#include "xaps-error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>

namespace xaps {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::system_clock;
using test::MockCaServiceServer;
using ::testing::HasSubstr;
using xaps::test::read_file;

constexpr std::chrono::days day{1};
const std::string pki = XAPS_TEST_PKI_DIR;
const std::string apple_id = "admin@example.com";
// SHA-256 of "password", as `xapsd -pass` printed it.
const std::string password_hash =
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
const std::vector<std::string> service_files = {"calendar", "contact", "mail", "mgmt", "alerts"};

mode_t mode_of(const std::string &path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

class CaServiceClientTest : public ::testing::Test {
protected:
    void SetUp() override {
        vendor_ = test::write_vendor_files(dir_.path());
        test::MockCaServiceConfig config;
        config.cert_file = pki + "/server.pem";
        config.key_file = pki + "/server.key";
        config.issuer_cert_file = pki + "/ca.pem";
        config.issuer_key_file = pki + "/ca.key";
        config.vendor_chain_file = vendor_.chain_pem;
        config.apple_id = apple_id;
        config.password_hash = password_hash;
        server_ = std::make_unique<MockCaServiceServer>(config);
        server_->start();

        settings_.apple_id = apple_id;
        settings_.password_hash = password_hash;
        settings_.url = server_->url();
        settings_.vendor_key_file = vendor_.key_pem;
        settings_.vendor_chain_file = vendor_.chain_pem;
        settings_.ca_file = pki + "/ca.pem";
        settings_.timeout = 10s;
        settings_.hostname = "mail.example.com";
        settings_.generate_key = [] {
            return caservice::EvpPkeyPtr(test::next_quick_key().release());
        };
        state_dir_ = dir_.path() + "/state";
        fs::create_directory(state_dir_);
    }

    ProvisionedCertificate provision(system_clock::time_point now) {
        return provision_or_reuse(settings_, state_dir_, now,
                                  [this](LogLevel level, std::string_view line) {
                                      log_.emplace_back(level, std::string(line));
                                  });
    }

    std::string state_file(const std::string &name) const {
        return state_dir_ + "/caservice/" + name;
    }

    bool logged(LogLevel level, const std::string &part) const {
        for (const auto &[logged_level, line] : log_) {
            if (logged_level == level && line.find(part) != std::string::npos) {
                return true;
            }
        }
        return false;
    }

    xaps::test::TemporaryDirectory dir_{"xaps-caservice-"};
    test::VendorFiles vendor_;
    std::unique_ptr<MockCaServiceServer> server_;
    CaServiceSettings settings_;
    std::string state_dir_;
    std::vector<std::pair<LogLevel, std::string>> log_;
    const system_clock::time_point now_ = system_clock::now();
};

TEST_F(CaServiceClientTest, RequestIsBuiltAndSignedLikeMacOsServer) {
    provision(now_);

    auto requests = server_->requests();
    ASSERT_EQ(requests.size(), 1u);
    const test::MockCaServiceRequest &request = requests[0];
    EXPECT_EQ(request.method, "POST");
    EXPECT_EQ(request.path, "/pushcert/caservice/new");
    EXPECT_EQ(request.headers.at("content-type"), "text/x-xml-plist");
    EXPECT_THAT(request.headers.at("user-agent"), HasSubstr("Servermgrd%20Plugin/6.0"));
    EXPECT_TRUE(request.signed_request);
    EXPECT_TRUE(request.chain_trusted);
    EXPECT_TRUE(request.signature_valid);
    EXPECT_EQ(request.apple_id, apple_id);
    EXPECT_EQ(request.password_hash, password_hash);
    EXPECT_EQ(request.profile_type, "Production");
    EXPECT_EQ(request.requester_type, "XServer");
    EXPECT_EQ(request.header_fields.at("ClientApplicationName"), "XServer");
    EXPECT_EQ(request.header_fields.at("ClientOSName"), "MAC OSX");
    EXPECT_EQ(request.header_fields.at("Version"), "1");

    struct Expected {
        const char *service_type;
        const char *subject;
        const char *description;
    };
    const Expected expected[] = {
        {"Service_Calendar", "/C=US/CN=com.apple.servermgrd.apns.calendar",
         "mail.example.com - apns:com.apple.calendar"},
        {"Service_Contact", "/C=US/CN=com.apple.servermgrd.apns.contact",
         "mail.example.com - apns:com.apple.contact"},
        {"Service_Mail", "/C=US/CN=com.apple.servermgrd.apns.mail",
         "mail.example.com - apns:com.apple.mail"},
        {"Service_Mgmt", "/C=US/CN=com.apple.servermgrd.apns.mgmt",
         "mail.example.com - apns:com.apple.mgmt"},
        {"Service_Alerts", "/C=US/CN=com.apple.server.apns.alerts",
         "mail.example.com - apns:com.apple.alerts"},
    };
    ASSERT_EQ(request.entries.size(), std::size(expected));
    for (std::size_t i = 0; i < std::size(expected); ++i) {
        SCOPED_TRACE(expected[i].service_type);
        const test::MockCaServiceEntry &entry = request.entries[i];
        EXPECT_EQ(entry.request_no, static_cast<std::int64_t>(i));
        EXPECT_EQ(entry.service_type, expected[i].service_type);
        EXPECT_EQ(entry.csr_subject, expected[i].subject);
        EXPECT_EQ(entry.description, expected[i].description);
        EXPECT_TRUE(entry.csr_signature_valid);
        EXPECT_EQ(entry.certificate_serial, "") << "a new certificate has no serial to renew";
    }
    EXPECT_EQ(request.error_code, 0);
}

TEST_F(CaServiceClientTest, IssuedCertificateIsStoredPrivatelyAndLoadsForApns) {
    ProvisionedCertificate result = provision(now_);

    EXPECT_EQ(result.origin, ProvisionedCertificate::Origin::issued);
    EXPECT_EQ(result.cert_file, state_file("mail.pem"));
    EXPECT_EQ(result.key_file, state_file("mail.key"));
    EXPECT_EQ(mode_of(state_dir_ + "/caservice"), 0700u);
    for (const std::string &service : service_files) {
        SCOPED_TRACE(service);
        EXPECT_EQ(mode_of(state_file(service + ".key")), 0600u);
        EXPECT_EQ(mode_of(state_file(service + ".pem")), 0600u);
    }
    EXPECT_FALSE(fs::exists(state_file("mail.pem.tmp")));

    // What the worker does next: load it as its APNs client certificate.
    ApnsSettings apns;
    apns.cert_file = result.cert_file;
    apns.key_file = result.key_file;
    TlsContext tls = TlsContext::load(apns);
    EXPECT_EQ(tls.topic(), "com.apple.mail.XServer.6a1d3c52-9f4e-4b7a-8c2d-0e5f4a3b2c1d");
    EXPECT_EQ(tls.certificate_expiry(), result.not_after);
    EXPECT_NEAR(std::chrono::duration<double>(result.not_after - now_).count(),
                std::chrono::duration<double>(365 * day).count(), 120);
    EXPECT_EQ(result.renew_at, result.not_after - 30 * day);
    EXPECT_TRUE(logged(LogLevel::info, "/pushcert/caservice/new"));
}

TEST_F(CaServiceClientTest, StoredCertificateIsReusedWhileValid) {
    ProvisionedCertificate first = provision(now_);
    std::string certificate = read_file(first.cert_file);

    for (auto later : {0 * day, 1 * day, 300 * day, 334 * day}) {
        SCOPED_TRACE(later.count());
        ProvisionedCertificate again = provision(now_ + later);
        EXPECT_EQ(again.origin, ProvisionedCertificate::Origin::reused);
        EXPECT_EQ(again.cert_file, first.cert_file);
        EXPECT_EQ(again.not_after, first.not_after);
    }
    EXPECT_EQ(server_->requests().size(), 1u) << "a valid certificate needs no request";
    EXPECT_EQ(read_file(first.cert_file), certificate);
}

TEST_F(CaServiceClientTest, RenewNowRenewsAValidCertificateWithTheSameKey) {
    ProvisionedCertificate first = provision(now_);
    const std::string key = read_file(first.key_file);
    const std::string certificate = read_file(first.cert_file);

    settings_.renew_now = true;
    ProvisionedCertificate renewed = provision(now_ + 1 * day);

    EXPECT_EQ(renewed.origin, ProvisionedCertificate::Origin::renewed);
    auto requests = server_->requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[1].path, "/pushcert/caservice/renew");
    EXPECT_EQ(requests[1].error_code, 0) << requests[1].error_message;
    EXPECT_EQ(read_file(renewed.key_file), key) << "renewal keeps the key";
    EXPECT_NE(read_file(renewed.cert_file), certificate);
    EXPECT_EQ(mode_of(renewed.cert_file), 0600u);
}

TEST_F(CaServiceClientTest, SettingsAreTakenFromTheXapsSettings) {
    XapsSettings xaps;
    xaps.apple_id = "admin@example.com";
    xaps.apple_password_hash = "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8";
    xaps.caservice_url = "https://certificates.example.com/pushcert/caservice";
    xaps.caservice_vendor_key_file = "/etc/dovecot/private/vendor.key";
    xaps.caservice_vendor_chain_file = "/etc/dovecot/vendor-chain.pem";

    CaServiceSettings caservice = caservice_settings_from(xaps);
    EXPECT_EQ(caservice.apple_id, "admin@example.com");
    EXPECT_EQ(caservice.password_hash,
              "5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8");
    EXPECT_EQ(caservice.url, "https://certificates.example.com/pushcert/caservice");
    EXPECT_EQ(caservice.vendor_key_file, "/etc/dovecot/private/vendor.key");
    EXPECT_EQ(caservice.vendor_chain_file, "/etc/dovecot/vendor-chain.pem");
    EXPECT_FALSE(caservice.renew_now) << "only `provision --force` renews before it is due";
    EXPECT_EQ(caservice.ca_file, "") << "the system's trust store";
}

TEST_F(CaServiceClientTest, RenewsWithTheSameKeysWithinThirtyDaysOfExpiry) {
    const struct {
        const char *name;
        std::chrono::days after;
    } rows[] = {
        {"29 days left", 336 * day},
        {"1 day left", 364 * day},
        {"expired", 400 * day},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        fs::remove_all(state_dir_ + "/caservice");
        ProvisionedCertificate first = provision(now_);
        std::string key = read_file(first.key_file);
        std::vector<std::string> stored_serials;
        for (const char *type : {"Service_Calendar", "Service_Contact", "Service_Mail",
                                 "Service_Mgmt", "Service_Alerts"}) {
            stored_serials.push_back(server_->issued_serials(type).back());
        }
        server_->set_validity(2 * 365 * 24h);
        std::size_t before = server_->requests().size();

        ProvisionedCertificate renewed = provision(now_ + row.after);
        server_->set_validity(365 * 24h);

        EXPECT_EQ(renewed.origin, ProvisionedCertificate::Origin::renewed);
        EXPECT_GT(renewed.not_after, first.not_after);
        EXPECT_EQ(read_file(renewed.key_file), key) << "renewal keeps the key";
        auto requests = server_->requests();
        ASSERT_EQ(requests.size(), before + 1);
        const test::MockCaServiceRequest &request = requests.back();
        EXPECT_EQ(request.path, "/pushcert/caservice/renew");
        EXPECT_TRUE(request.signature_valid);
        EXPECT_EQ(request.error_code, 0) << request.error_message;
        ASSERT_EQ(request.entries.size(), stored_serials.size());
        for (std::size_t i = 0; i < stored_serials.size(); ++i) {
            EXPECT_EQ(request.entries[i].certificate_serial, stored_serials[i]);
        }
        caservice::EvpPkeyPtr stored_key = caservice::private_key_from_pem(key);
        caservice::X509Ptr certificate =
            caservice::certificate_from_pem(read_file(renewed.cert_file));
        ASSERT_TRUE(stored_key && certificate);
        EXPECT_TRUE(caservice::certificate_matches_key(certificate.get(), stored_key.get()));
        EXPECT_EQ(caservice::serial_hex(certificate.get()),
                  server_->issued_serials("Service_Mail").back());
    }
}

TEST_F(CaServiceClientTest, FailedRenewalKeepsTheCertificateWhileItIsValid) {
    ProvisionedCertificate first = provision(now_);
    std::string certificate = read_file(first.cert_file);
    server_->set_error(test::discontinued_service_error());

    ProvisionedCertificate kept = provision(now_ + 340 * day);

    EXPECT_EQ(kept.origin, ProvisionedCertificate::Origin::kept_after_failed_renewal);
    EXPECT_THAT(kept.renewal_problem, HasSubstr("-80010"));
    EXPECT_EQ(kept.not_after, first.not_after);
    EXPECT_EQ(read_file(kept.cert_file), certificate);
    EXPECT_TRUE(logged(LogLevel::warning, "keeping the current one"));

    try {
        provision(now_ + 400 * day);
        FAIL() << "an expired certificate that cannot be renewed is an error";
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::config);
        EXPECT_THAT(e.what(), HasSubstr("renewing the expired push certificate"));
        EXPECT_THAT(e.what(), HasSubstr("-80010"));
    }
}

TEST_F(CaServiceClientTest, AppleErrorsNameTheCodeAndWhatToDo) {
    const struct {
        const char *name;
        std::optional<test::MockCaServiceError> scripted;
        std::string password_hash;
        ErrorKind kind;
        std::vector<std::string> message_parts;
    } rows[] = {
        {"service discontinued",
         test::discontinued_service_error(),
         password_hash,
         ErrorKind::config,
         {"-80010", "ServiceType is Invalid.",
          "Apple no longer issues certificates through this "
          "service"}},
        {"wrong password",
         std::nullopt,
         std::string(64, 'a'),
         ErrorKind::config,
         {"-80004", "Account Name - Password invalid.", "xaps_apple_password_hash"}},
        {"other error",
         test::MockCaServiceError{-20358, "Invalid Session", "Exception from DS"},
         password_hash,
         ErrorKind::unavailable,
         {"-20358", "Invalid Session", "Exception from DS"}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        server_->set_error(row.scripted);
        settings_.password_hash = row.password_hash;
        try {
            provision(now_);
            FAIL() << "expected an error";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), row.kind);
            for (const std::string &part : row.message_parts) {
                EXPECT_THAT(e.what(), HasSubstr(part));
            }
        }
        EXPECT_FALSE(fs::exists(state_file("mail.pem"))) << "nothing stored after an error";
        EXPECT_FALSE(fs::exists(state_file("mail.key")));
    }
}

TEST_F(CaServiceClientTest, AnswerSizeIsBounded) {
    settings_.max_response_bytes = 64 * 1024;
    const struct {
        const char *name;
        bool chunked;
    } rows[] = {{"Content-Length", false}, {"chunked", true}};
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        server_->set_raw_answer(
            test::MockHttpAnswer{200, std::string(1024 * 1024, 'x'), row.chunked});
        try {
            provision(now_);
            FAIL() << "an oversized answer must be refused";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
            EXPECT_THAT(e.what(), HasSubstr("larger than 65536 bytes"));
        }
    }
}

TEST_F(CaServiceClientTest, BadAnswersAreErrors) {
    const struct {
        const char *name;
        test::MockHttpAnswer answer;
        ErrorKind kind;
        const char *message_part;
    } rows[] = {
        {"HTTP error",
         {503, "<html>Service Unavailable</html>", false},
         ErrorKind::unavailable,
         "HTTP status 503"},
        {"not a plist",
         {200, "<html>hello</html>", false},
         ErrorKind::invalid_input,
         "Response/Status"},
        {"success without certificates",
         {200,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>"
          "<key>Response</key><dict><key>Status</key><dict><key>ErrorCode</key>"
          "<integer>0</integer></dict></dict></dict></plist>",
          false},
         ErrorKind::invalid_input,
         "no certificate for Service_Calendar"},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        server_->set_raw_answer(row.answer);
        try {
            provision(now_);
            FAIL() << "expected an error";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), row.kind);
            EXPECT_THAT(e.what(), HasSubstr(row.message_part));
        }
        EXPECT_FALSE(fs::exists(state_file("mail.pem")));
    }
}

TEST_F(CaServiceClientTest, SlowServiceIsBoundedByTheTimeout) {
    settings_.timeout = 300ms;
    server_->set_answer_delay(5s);
    auto started = std::chrono::steady_clock::now();
    try {
        provision(now_);
        FAIL() << "expected a timeout";
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::unavailable);
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
}

TEST_F(CaServiceClientTest, RequestSignedByAnotherVendorIsRefused) {
    test::VendorFiles other = test::write_vendor_files(dir_.path(), "other");
    settings_.vendor_key_file = other.key_pem;
    settings_.vendor_chain_file = other.chain_pem;
    try {
        provision(now_);
        FAIL() << "expected the service to refuse the signature";
    } catch (const Error &e) {
        EXPECT_THAT(e.what(), HasSubstr(std::to_string(test::mock_error_bad_signature)));
    }
    auto requests = server_->requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_FALSE(requests[0].chain_trusted);
}

TEST_F(CaServiceClientTest, VendorFilesInDerFormAreAccepted) {
    settings_.vendor_key_file = vendor_.key_der;
    settings_.vendor_chain_file = vendor_.chain_der;
    EXPECT_EQ(provision(now_).origin, ProvisionedCertificate::Origin::issued);
    ASSERT_EQ(server_->requests().size(), 1u);
    EXPECT_TRUE(server_->requests()[0].signature_valid);
}

TEST_F(CaServiceClientTest, SettingErrorsAreReportedBeforeAnyRequest) {
    test::VendorFiles other = test::write_vendor_files(dir_.path(), "other");
    const struct {
        const char *name;
        std::function<void(CaServiceSettings &, std::string &)> change;
        const char *message_part;
    } rows[] = {
        {"no Apple ID", [](CaServiceSettings &s, std::string &) { s.apple_id.clear(); },
         "xaps_apple_id"},
        {"hash too short",
         [](CaServiceSettings &s, std::string &) { s.password_hash = "5e884898"; },
         "xaps_apple_password_hash"},
        {"hash not hex",
         [](CaServiceSettings &s, std::string &) { s.password_hash = std::string(64, 'g'); },
         "xaps_apple_password_hash"},
        {"plain http",
         [](CaServiceSettings &s, std::string &) { s.url = "http://127.0.0.1:1/pushcert"; },
         "xaps_caservice_url"},
        {"no vendor key", [](CaServiceSettings &s, std::string &) { s.vendor_key_file.clear(); },
         "xaps_caservice_vendor_key_file"},
        {"vendor key missing",
         [](CaServiceSettings &s, std::string &) { s.vendor_key_file = "/nonexistent/key"; },
         "/nonexistent/key"},
        {"vendor key of another chain",
         [&](CaServiceSettings &s, std::string &) { s.vendor_key_file = other.key_pem; },
         "does not belong to the first certificate"},
        {"vendor chain not certificates",
         [&](CaServiceSettings &s, std::string &) { s.vendor_chain_file = other.key_pem; },
         "xaps_caservice_vendor_chain_file"},
        {"state directory missing",
         [](CaServiceSettings &, std::string &state) { state += "/missing"; }, "xaps_db_path"},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        CaServiceSettings settings = settings_;
        std::string state = state_dir_;
        row.change(settings, state);
        try {
            provision_or_reuse(settings, state, now_);
            FAIL() << "expected a config error";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::config);
            EXPECT_THAT(e.what(), HasSubstr(row.message_part));
        }
    }
    EXPECT_TRUE(server_->requests().empty());
}

TEST_F(CaServiceClientTest, PasswordHashIsSentInLowerCase) {
    std::string upper = password_hash;
    for (char &c : upper) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    settings_.password_hash = upper;
    provision(now_);
    ASSERT_EQ(server_->requests().size(), 1u);
    EXPECT_EQ(server_->requests()[0].password_hash, password_hash);
}

TEST_F(CaServiceClientTest, UnusableStoredStateIsReplacedWithNewCertificates) {
    const struct {
        const char *name;
        std::function<void(const std::string &caservice_dir)> damage;
        const char *warning_part;
    } rows[] = {
        {"certificate garbled",
         [](const std::string &d) { std::ofstream(d + "/mail.pem") << "garbage"; },
         "mail.pem is not a PEM certificate"},
        {"key missing", [](const std::string &d) { fs::remove(d + "/contact.key"); },
         "contact.key is missing"},
        {"key of another certificate",
         [](const std::string &d) {
             fs::copy_file(d + "/mgmt.key", d + "/mail.key", fs::copy_options::overwrite_existing);
         },
         "mail.pem does not belong to"},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        fs::remove_all(state_dir_ + "/caservice");
        provision(now_);
        row.damage(state_dir_ + "/caservice");
        log_.clear();
        std::size_t before = server_->requests().size();

        ProvisionedCertificate result = provision(now_);

        EXPECT_EQ(result.origin, ProvisionedCertificate::Origin::issued);
        EXPECT_EQ(server_->requests().size(), before + 1);
        EXPECT_EQ(server_->requests().back().path, "/pushcert/caservice/new");
        EXPECT_TRUE(logged(LogLevel::warning, row.warning_part));
    }
}

TEST_F(CaServiceClientTest, UntrustedServiceCertificateIsRefused) {
    settings_.ca_file = pki + "/untrusted-ca.pem";
    try {
        provision(now_);
        FAIL() << "expected a TLS verification failure";
    } catch (const Error &e) {
        EXPECT_EQ(e.kind(), ErrorKind::unavailable);
    }
    EXPECT_TRUE(server_->requests().empty());
}

} // namespace
} // namespace xaps
