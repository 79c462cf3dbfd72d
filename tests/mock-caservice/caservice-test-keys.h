// Keys for the caservice tests: a stand-in for macOS Server's vendor
// credential (the real one is Apple's and never in this repository), and
// ready-made RSA-2048 keys so that a test does not spend seconds generating them.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <openssl/evp.h>

namespace xaps::test {

struct VendorFiles {
    std::string key_pem;   // PKCS#8 PEM
    std::string key_der;   // PKCS#1 DER, the form xapsd embedded
    std::string chain_pem; // the vendor certificate, then its issuer, PEM
    std::string chain_der; // the same, DER back to back
};

// Writes a new vendor key (RSA-1024 like macOS Server's) and a two-certificate
// chain into dir under names starting with prefix; returns their paths.
VendorFiles write_vendor_files(const std::string &dir, const std::string &prefix = "vendor");

struct PkeyDeleter {
    void operator()(EVP_PKEY *key) const noexcept { EVP_PKEY_free(key); }
};
// Hands out the test PKI's five RSA-2048 client keys in turn: five calls in a
// row give five different keys.
std::unique_ptr<EVP_PKEY, PkeyDeleter> next_quick_key();

} // namespace xaps::test
