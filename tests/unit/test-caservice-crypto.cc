// Keys, CSRs and the vendor credential of the legacy certificate service.
#include "caservice-crypto.h"
#include "temporary-directory.h"

#include "caservice-test-keys.h"
#include "xaps-error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace xaps::caservice {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

EvpPkeyPtr quick_key() {
    return EvpPkeyPtr(test::next_quick_key().release());
}

TEST(CaServiceCrypto, CsrHasMacOsServersSubjectAndSha1Signature) {
    EvpPkeyPtr key = quick_key();
    std::string pem = make_csr_pem(key.get(), "com.apple.servermgrd.apns.mail");
    EXPECT_EQ(pem.rfind("-----BEGIN CERTIFICATE REQUEST-----", 0), 0u);

    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), -1), BIO_free);
    std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(
        PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr), X509_REQ_free);
    ASSERT_NE(req, nullptr);
    char subject[256];
    X509_NAME_oneline(X509_REQ_get_subject_name(req.get()), subject, sizeof(subject));
    EXPECT_STREQ(subject, "/C=US/CN=com.apple.servermgrd.apns.mail");
    EXPECT_EQ(X509_REQ_get_signature_nid(req.get()), NID_sha1WithRSAEncryption);
    EXPECT_EQ(X509_REQ_verify(req.get(), X509_REQ_get0_pubkey(req.get())), 1);
    EXPECT_EQ(EVP_PKEY_eq(X509_REQ_get0_pubkey(req.get()), key.get()), 1);
}

TEST(CaServiceCrypto, GeneratedKeysAreRsa2048) {
    EvpPkeyPtr key = generate_rsa_key();
    ASSERT_NE(key, nullptr);
    EXPECT_EQ(EVP_PKEY_get_base_id(key.get()), EVP_PKEY_RSA);
    EXPECT_EQ(EVP_PKEY_get_bits(key.get()), 2048);
}

TEST(CaServiceCrypto, SerialIsWrittenLikeGosBigIntText16) {
    const struct {
        const char *hex_in; // as BN_hex2bn reads it
        const char *expected;
    } rows[] = {
        {"0", "0"},     {"1", "1"},
        {"0A", "a"},    {"1000", "1000"},
        {"00FF", "ff"}, {"7D2B8F1E0C4A9B3E5F60718293A4B5C6", "7d2b8f1e0c4a9b3e5f60718293a4b5c6"},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.hex_in);
        BIGNUM *bn = nullptr;
        ASSERT_GT(BN_hex2bn(&bn, row.hex_in), 0);
        X509Ptr cert(X509_new());
        ASSERT_NE(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())), nullptr);
        BN_free(bn);
        EXPECT_EQ(serial_hex(cert.get()), row.expected);
    }
}

TEST(CaServiceCrypto, VendorCredentialLoadsFromPemOrDer) {
    xaps::test::TemporaryDirectory dir{"xaps-caservice-crypto-"};
    test::VendorFiles files = test::write_vendor_files(dir.path());
    VendorCredential reference = load_vendor_credential(files.key_pem, files.chain_pem);
    const struct {
        const char *name;
        std::string key;
        std::string chain;
    } rows[] = {
        {"PEM key, PEM chain", files.key_pem, files.chain_pem},
        {"PKCS#1 DER key (as xapsd embedded it), DER chain", files.key_der, files.chain_der},
        {"PEM key, DER chain", files.key_pem, files.chain_der},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        VendorCredential vendor = load_vendor_credential(row.key, row.chain);
        EXPECT_EQ(EVP_PKEY_eq(vendor.key.get(), reference.key.get()), 1);
        EXPECT_EQ(vendor.chain_der, reference.chain_der);
    }
    std::ifstream der(files.chain_der, std::ios::binary);
    std::string chain_der((std::istreambuf_iterator<char>(der)), std::istreambuf_iterator<char>());
    EXPECT_EQ(reference.chain_der, chain_der) << "both certificates, leaf first";
}

TEST(CaServiceCrypto, BrokenVendorFilesAreConfigErrors) {
    xaps::test::TemporaryDirectory dir{"xaps-caservice-crypto-"};
    test::VendorFiles files = test::write_vendor_files(dir.path());
    test::VendorFiles other = test::write_vendor_files(dir.path(), "other");
    std::string garbage = dir.path() + "/garbage";
    std::ofstream(garbage) << "not a key";
    std::string truncated = dir.path() + "/truncated.der";
    {
        std::ifstream in(files.chain_der, std::ios::binary);
        std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::ofstream(truncated, std::ios::binary) << content.substr(0, content.size() - 10);
    }
    const struct {
        const char *name;
        std::string key;
        std::string chain;
        const char *message_part;
    } rows[] = {
        {"key not set", "", files.chain_pem, "must both be set"},
        {"key missing", dir.path() + "/none", files.chain_pem, "/none"},
        {"key garbage", garbage, files.chain_pem, "not an unencrypted private key"},
        {"chain garbage", files.key_pem, garbage, "not certificates"},
        {"chain truncated", files.key_pem, truncated, "not certificates"},
        {"key of another vendor", other.key_pem, files.chain_pem,
         "does not belong to the first certificate"},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        try {
            load_vendor_credential(row.key, row.chain);
            FAIL() << "expected a config error";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::config);
            EXPECT_THAT(e.what(), HasSubstr(row.message_part));
        }
    }
}

TEST(CaServiceCrypto, PemRoundTripsAndRefusesGarbage) {
    EvpPkeyPtr key = quick_key();
    EvpPkeyPtr again = private_key_from_pem(private_key_to_pem(key.get()));
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(EVP_PKEY_eq(again.get(), key.get()), 1);
    EXPECT_EQ(private_key_from_pem("garbage"), nullptr);
    EXPECT_EQ(certificate_from_pem("garbage"), nullptr);

    std::ifstream in(std::string(XAPS_TEST_PKI_DIR) + "/client.pem");
    std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    X509Ptr cert = certificate_from_pem(pem);
    ASSERT_NE(cert, nullptr);
    EXPECT_EQ(certificate_to_pem(cert.get()), pem);
    EXPECT_GT(not_after(cert.get()), std::chrono::system_clock::now());
}

} // namespace
} // namespace xaps::caservice
