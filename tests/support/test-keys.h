// Keys and certificates that tests make themselves, and their PEM text, for
// the cases the test PKI (tests/pki/) does not cover: Apple's .p8 token keys,
// expired or mismatched certificates, encrypted keys.
#pragma once

#include <gtest/gtest.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <functional>
#include <memory>
#include <string>

namespace xaps::test {

struct KeyFree {
    void operator()(EVP_PKEY *key) const { EVP_PKEY_free(key); }
};
struct CertFree {
    void operator()(X509 *cert) const { X509_free(cert); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

// A new EC key on `curve`; APNs token keys are P-256.
inline Key make_ec_key(const char *curve = "P-256") {
    Key key(EVP_EC_gen(curve));
    EXPECT_NE(key, nullptr) << curve;
    return key;
}

// What `write` puts into a memory BIO.
inline std::string pem_of(const std::function<int(BIO *)> &write) {
    BIO *bio = BIO_new(BIO_s_mem());
    EXPECT_EQ(write(bio), 1);
    char *data = nullptr;
    const long length = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(length));
    BIO_free(bio);
    return pem;
}

// PKCS#8 PEM, "-----BEGIN PRIVATE KEY-----", as Apple's .p8 files.
inline std::string private_key_pem(EVP_PKEY *key) {
    return pem_of([&](BIO *bio) {
        return PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
}

// The same, encrypted with the passphrase "secret".
inline std::string encrypted_private_key_pem(EVP_PKEY *key) {
    static char passphrase[] = "secret";
    return pem_of([&](BIO *bio) {
        return PEM_write_bio_PrivateKey(bio, key, EVP_aes_128_cbc(), nullptr, 0, nullptr,
                                        passphrase);
    });
}

// "-----BEGIN PUBLIC KEY-----": the half Apple (or the mock) verifies with.
inline std::string public_key_pem(EVP_PKEY *key) {
    return pem_of([&](BIO *bio) { return PEM_write_bio_PUBKEY(bio, key); });
}

inline std::string cert_pem(X509 *cert) {
    return pem_of([&](BIO *bio) { return PEM_write_bio_X509(bio, cert); });
}

} // namespace xaps::test
