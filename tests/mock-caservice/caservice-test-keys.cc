#include "caservice-test-keys.h"

#include "xaps-error.h"

#include <array>
#include <cstdio>
#include <iterator>
#include <fstream>
#include <mutex>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace xaps::test {
namespace {

struct X509Deleter {
    void operator()(X509 *cert) const noexcept { X509_free(cert); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

PkeyPtr rsa_1024() {
    PkeyPtr key(EVP_RSA_gen(1024));
    if (!key) {
        throw Error(ErrorKind::internal, "test keys: EVP_RSA_gen failed");
    }
    return key;
}

X509Ptr make_cert(EVP_PKEY *key, const char *common_name, X509 *issuer, EVP_PKEY *issuer_key,
                  bool ca) {
    X509Ptr cert(X509_new());
    X509_set_version(cert.get(), X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), ca ? 1 : 2);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600L * 24 * 365);
    X509_NAME *name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_ASC,
                               reinterpret_cast<const unsigned char *>("xaps tests"), -1, -1, 0);
    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC,
                               reinterpret_cast<const unsigned char *>(common_name), -1, -1, 0);
    X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(cert.get(), key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
    X509_EXTENSION *extension = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints,
                                                    ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(cert.get(), extension, -1);
    X509_EXTENSION_free(extension);
    if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) {
        throw Error(ErrorKind::internal, "test keys: X509_sign failed");
    }
    return cert;
}

std::string write(const std::string &path, const std::string &content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) {
        throw Error(ErrorKind::internal, "test keys: cannot write " + path);
    }
    return path;
}

std::string pem_of(X509 *cert) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_X509(bio.get(), cert);
    char *data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(size));
}

std::string der_of(X509 *cert) {
    unsigned char *der = nullptr;
    int size = i2d_X509(cert, &der);
    std::string out(reinterpret_cast<char *>(der), static_cast<std::size_t>(size));
    OPENSSL_free(der);
    return out;
}

} // namespace

VendorFiles write_vendor_files(const std::string &dir, const std::string &prefix) {
    PkeyPtr issuer_key = rsa_1024();
    PkeyPtr key = rsa_1024();
    X509Ptr issuer = make_cert(issuer_key.get(), "Test FairPlay Certification Authority", nullptr,
                               issuer_key.get(), true);
    X509Ptr leaf = make_cert(key.get(), "APN-Server.test", issuer.get(), issuer_key.get(), false);

    VendorFiles files;
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char *data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    files.key_pem =
        write(dir + "/" + prefix + ".key.pem", std::string(data, static_cast<std::size_t>(size)));
    unsigned char *pkcs1 = nullptr;
    int pkcs1_size = i2d_PrivateKey(key.get(), &pkcs1); // RSA: the PKCS#1 structure
    files.key_der =
        write(dir + "/" + prefix + ".key.der",
              std::string(reinterpret_cast<char *>(pkcs1), static_cast<std::size_t>(pkcs1_size)));
    OPENSSL_free(pkcs1);
    files.chain_pem =
        write(dir + "/" + prefix + "-chain.pem", pem_of(leaf.get()) + pem_of(issuer.get()));
    files.chain_der =
        write(dir + "/" + prefix + "-chain.der", der_of(leaf.get()) + der_of(issuer.get()));
    return files;
}

std::unique_ptr<EVP_PKEY, PkeyDeleter> next_quick_key() {
    // RSA-2048 like the real ones (TLS refuses smaller client keys), made
    // once at build time by tests/pki instead of at every provisioning.
    static const char *const names[] = {"client.key", "client-short-topic.key",
                                        "client-untrusted.key", "client-expired.key",
                                        "untrusted-ca.key"};
    static std::mutex mutex;
    static std::array<PkeyPtr, std::size(names)> keys;
    static std::size_t next = 0;
    std::lock_guard lock(mutex);
    std::size_t index = next++ % keys.size();
    PkeyPtr &key = keys[index];
    if (!key) {
        std::string path = std::string(XAPS_TEST_PKI_DIR) + "/" + names[index];
        // A deleter type, not decltype(&std::fclose): glibc 2.41 (Debian 13)
        // gives fclose attributes that a template argument drops (-Wignored-attributes).
        struct FileClose {
            void operator()(FILE *f) const noexcept { std::fclose(f); }
        };
        std::unique_ptr<FILE, FileClose> file(std::fopen(path.c_str(), "r"));
        if (file) {
            key.reset(PEM_read_PrivateKey(file.get(), nullptr, nullptr, nullptr));
        }
        if (!key) {
            throw Error(ErrorKind::internal, "test keys: cannot read " + path);
        }
    }
    EVP_PKEY_up_ref(key.get());
    return PkeyPtr(key.get());
}

} // namespace xaps::test
