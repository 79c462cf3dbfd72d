// TlsContext::load against certificates made here, so that every broken case
// (expired, mismatched, encrypted...) is exact and needs no fixture files.
#include "tls-context.h"

#include "test-keys.h"
#include "xaps-error.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

namespace xaps {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;
using std::chrono::system_clock;

using test::Cert;
using test::cert_pem;
using test::encrypted_private_key_pem;
using test::Key;
using test::make_ec_key;
using test::private_key_pem;

struct CertSpec {
    std::string uid = "com.apple.mail.XServer.0b7c2b4c-4f3e-4b3e-9f6a-3c9a0e1f2d3c";
    long valid_from_seconds = -3600; // relative to now
    long valid_to_seconds = 365L * 24 * 3600;
};

Cert make_cert(EVP_PKEY *key, const CertSpec &spec) {
    Cert cert(X509_new());
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), spec.valid_from_seconds);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), spec.valid_to_seconds);
    X509_NAME *name = X509_get_subject_name(cert.get());
    if (!spec.uid.empty())
        X509_NAME_add_entry_by_NID(name, NID_userId, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char *>(spec.uid.c_str()), -1,
                                   -1, 0);
    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char *>("Apple Push Services"), -1,
                               -1, 0);
    X509_set_issuer_name(cert.get(), name);
    X509_set_pubkey(cert.get(), key);
    EXPECT_GT(X509_sign(cert.get(), key, EVP_sha256()), 0);
    return cert;
}

std::string pkcs12_der(EVP_PKEY *key, X509 *cert, const char *password) {
    PKCS12 *p12 = PKCS12_create(password, "apns", key, cert, nullptr, 0, 0, 0, 0, 0);
    EXPECT_NE(p12, nullptr);
    BIO *bio = BIO_new(BIO_s_mem());
    i2d_PKCS12_bio(bio, p12);
    char *data = nullptr;
    const long length = BIO_get_mem_data(bio, &data);
    std::string der(data, static_cast<std::size_t>(length));
    BIO_free(bio);
    PKCS12_free(p12);
    return der;
}

class TlsContextTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/test-tls-context-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        dir_ = pattern;
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string write(const std::string &name, const std::string &content) {
        const fs::path path = dir_ / name;
        std::ofstream(path, std::ios::binary) << content;
        return path.string();
    }

    // A matching certificate and key in cert.pem / key.pem, as most admins have them.
    ApnsSettings valid_pem_settings(const CertSpec &spec = {}) {
        ApnsSettings settings;
        Key key = make_ec_key();
        Cert cert = make_cert(key.get(), spec);
        settings.cert_file = write("cert.pem", cert_pem(cert.get()));
        settings.key_file = write("key.pem", private_key_pem(key.get()));
        return settings;
    }

    fs::path dir_;
};

TEST_F(TlsContextTest, LoadsPemCertificateAndKeyAndReadsTopicFromUid) {
    const ApnsSettings settings = valid_pem_settings();
    const TlsContext context = TlsContext::load(settings);
    EXPECT_EQ(context.topic(), "com.apple.mail.XServer.0b7c2b4c-4f3e-4b3e-9f6a-3c9a0e1f2d3c");
    ASSERT_NE(context.native(), nullptr);
    EXPECT_EQ(SSL_CTX_get_min_proto_version(context.native()), TLS1_2_VERSION);
    EXPECT_EQ(SSL_CTX_get_verify_mode(context.native()), SSL_VERIFY_PEER);
    EXPECT_TRUE(context.has_client_certificate());
    const auto expected_expiry = system_clock::now() + hours(24 * 365);
    ASSERT_TRUE(context.certificate_expiry().has_value());
    EXPECT_LT(std::chrono::abs(*context.certificate_expiry() - expected_expiry),
              std::chrono::minutes(5));
}

TEST_F(TlsContextTest, TopicsOfAnyLength) {
    const std::string topics[] = {"com.apple.mail.nil", "x",
                                  "com.apple.mail.XServer." + std::string(200, 'a')};
    for (const std::string &topic : topics) {
        SCOPED_TRACE(topic);
        CertSpec spec;
        spec.uid = topic;
        EXPECT_EQ(TlsContext::load(valid_pem_settings(spec)).topic(), topic);
    }
}

TEST_F(TlsContextTest, KeyMayFollowTheCertificateInOneFile) {
    Key key = make_ec_key();
    Cert cert = make_cert(key.get(), {});
    ApnsSettings settings;
    settings.cert_file = write("combined.pem", cert_pem(cert.get()) + private_key_pem(key.get()));
    EXPECT_FALSE(TlsContext::load(settings).topic().empty());
}

TEST_F(TlsContextTest, LoadsPkcs12WithItsPassword) {
    Key key = make_ec_key();
    Cert cert = make_cert(key.get(), {});
    ApnsSettings settings;
    settings.p12_file = write("apns.p12", pkcs12_der(key.get(), cert.get(), "pw"));
    settings.p12_password = "pw";
    EXPECT_EQ(TlsContext::load(settings).topic(),
              "com.apple.mail.XServer.0b7c2b4c-4f3e-4b3e-9f6a-3c9a0e1f2d3c");
}

TEST_F(TlsContextTest, LoadsTheTestPkiPkcs12WithItsPassword) {
    const std::string pki = XAPS_TEST_PKI_DIR;
    ApnsSettings settings;
    settings.p12_file = pki + "/client.p12";
    settings.p12_password = "test";
    const TlsContext context = TlsContext::load(settings);
    std::ifstream topic_file(pki + "/topic.txt");
    std::string topic;
    std::getline(topic_file, topic);
    EXPECT_EQ(context.topic(), topic);
    EXPECT_TRUE(context.has_client_certificate());
    EXPECT_NE(SSL_CTX_get0_certificate(context.native()), nullptr);
}

TEST_F(TlsContextTest, TokenAuthHasNoClientCertificateAndTheConfiguredTopic) {
    ApnsSettings settings;
    settings.token_key_file = "/etc/dovecot/AuthKey_ABC123DEFG.p8"; // ProviderToken reads it
    settings.topic = "com.example.mail";
    const TlsContext context = TlsContext::load(settings);
    EXPECT_EQ(context.topic(), "com.example.mail");
    EXPECT_FALSE(context.has_client_certificate());
    EXPECT_FALSE(context.certificate_expiry().has_value());
    EXPECT_EQ(SSL_CTX_get0_certificate(context.native()), nullptr);
    EXPECT_EQ(SSL_CTX_get_verify_mode(context.native()), SSL_VERIFY_PEER);
}

TEST_F(TlsContextTest, ACertificateTakesPrecedenceOverAToken) {
    ApnsSettings settings = valid_pem_settings();
    settings.token_key_file = "/etc/dovecot/AuthKey_ABC123DEFG.p8";
    settings.topic = "com.example.mail";
    const TlsContext context = TlsContext::load(settings);
    EXPECT_TRUE(context.has_client_certificate());
    EXPECT_EQ(context.topic(), "com.apple.mail.XServer.0b7c2b4c-4f3e-4b3e-9f6a-3c9a0e1f2d3c");
}

TEST_F(TlsContextTest, LoadsAnExplicitCaFile) {
    ApnsSettings settings = valid_pem_settings();
    settings.ca_file = settings.cert_file; // any PEM certificate serves as a trust anchor
    EXPECT_NO_THROW(TlsContext::load(settings));
}

struct BrokenCase {
    std::string name;
    std::function<ApnsSettings()> make;
    std::string file_in_message; // the file the error must name
    std::string problem;         // and what is wrong with it
};

TEST_F(TlsContextTest, EveryBrokenCredentialIsAConfigErrorNamingFileAndProblem) {
    const std::vector<BrokenCase> cases = {
        {"missing certificate",
         [] {
             ApnsSettings settings;
             settings.cert_file = "/nonexistent/cert.pem";
             return settings;
         },
         "/nonexistent/cert.pem", "No such file"},
        {"certificate is a directory",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.cert_file = dir_.string();
             return settings;
         },
         dir_.string(), "not a regular file"},
        {"missing key",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.key_file = (dir_ / "nokey.pem").string();
             return settings;
         },
         "nokey.pem", "No such file"},
        {"garbage certificate",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.cert_file = write("garbage.pem", "this is not PEM\n");
             return settings;
         },
         "garbage.pem", "no PEM certificate"},
        {"garbage key",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.key_file = write("garbage-key.pem", "-----BEGIN PRIVATE KEY-----\nxx\n");
             return settings;
         },
         "garbage-key.pem", "no PEM private key"},
        {"encrypted key",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             Key key = make_ec_key();
             Cert cert = make_cert(key.get(), {});
             settings.cert_file = write("cert2.pem", cert_pem(cert.get()));
             settings.key_file = write("encrypted.pem", encrypted_private_key_pem(key.get()));
             return settings;
         },
         "encrypted.pem", "encrypted"},
        {"key of another certificate",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             Key other = make_ec_key();
             settings.key_file = write("other-key.pem", private_key_pem(other.get()));
             return settings;
         },
         "other-key.pem", "does not match the certificate"},
        {"expired certificate",
         [this] {
             CertSpec spec;
             spec.valid_from_seconds = -10L * 24 * 3600;
             spec.valid_to_seconds = -24L * 3600;
             return valid_pem_settings(spec);
         },
         "cert.pem", "expired on"},
        {"certificate not yet valid",
         [this] {
             CertSpec spec;
             spec.valid_from_seconds = 24L * 3600;
             return valid_pem_settings(spec);
         },
         "cert.pem", "not valid before"},
        {"certificate without UID",
         [this] {
             CertSpec spec;
             spec.uid = "";
             return valid_pem_settings(spec);
         },
         "cert.pem", "no UID"},
        {"missing CA file",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.ca_file = "/nonexistent/ca.pem";
             return settings;
         },
         "/nonexistent/ca.pem", "No such file"},
        {"CA file without certificates",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.ca_file = write("empty-ca.pem", "nothing here\n");
             return settings;
         },
         "empty-ca.pem", "no usable certificate"},
        {"PKCS#12 with a wrong password",
         [this] {
             Key key = make_ec_key();
             Cert cert = make_cert(key.get(), {});
             ApnsSettings settings;
             settings.p12_file = write("wrong.p12", pkcs12_der(key.get(), cert.get(), "right"));
             settings.p12_password = "wrong";
             return settings;
         },
         "wrong.p12", "wrong password (xaps_apns_p12_password)"},
        {"PKCS#12 needing a password, none given",
         [this] {
             Key key = make_ec_key();
             Cert cert = make_cert(key.get(), {});
             ApnsSettings settings;
             settings.p12_file = write("needs.p12", pkcs12_der(key.get(), cert.get(), "right"));
             return settings;
         },
         "needs.p12", "the file needs one"},
        {"test PKI PKCS#12 with a wrong password",
         [] {
             ApnsSettings settings;
             settings.p12_file = std::string(XAPS_TEST_PKI_DIR) + "/client.p12";
             settings.p12_password = "not-test";
             return settings;
         },
         "client.p12", "wrong password"},
        {"PKCS#12 that is PEM",
         [this] {
             ApnsSettings settings = valid_pem_settings();
             settings.p12_file = settings.cert_file;
             return settings;
         },
         "cert.pem", "not PKCS#12"},
        {"no credential configured", [] { return ApnsSettings{}; }, "xaps_apns_token_key_file",
         "no APNs credential configured"},
        {"token auth without topic",
         [] {
             ApnsSettings settings;
             settings.token_key_file = "/etc/dovecot/AuthKey.p8";
             return settings;
         },
         "xaps_apns_topic", "/etc/dovecot/AuthKey.p8"},
    };
    for (const BrokenCase &row : cases) {
        SCOPED_TRACE(row.name);
        const ApnsSettings settings = row.make();
        try {
            TlsContext::load(settings);
            ADD_FAILURE() << "loaded";
        } catch (const Error &error) {
            EXPECT_EQ(error.kind(), ErrorKind::config);
            EXPECT_NE(std::string(error.what()).find(row.file_in_message), std::string::npos)
                << error.what();
            EXPECT_NE(std::string(error.what()).find(row.problem), std::string::npos)
                << error.what();
        }
    }
}

} // namespace
} // namespace xaps
