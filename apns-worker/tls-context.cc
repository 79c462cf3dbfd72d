#include "tls-context.h"

#include "xaps-error.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace xaps {
namespace {

// Credential files are small; anything bigger is not one.
constexpr off_t max_credential_file_size = 1024 * 1024;

struct BioFree {
    void operator()(BIO *bio) const noexcept { BIO_free(bio); }
};
struct X509Free {
    void operator()(X509 *cert) const noexcept { X509_free(cert); }
};
struct EvpPkeyFree {
    void operator()(EVP_PKEY *key) const noexcept { EVP_PKEY_free(key); }
};
struct Pkcs12Free {
    void operator()(PKCS12 *p12) const noexcept { PKCS12_free(p12); }
};
struct X509StackFree {
    void operator()(STACK_OF(X509) * certs) const noexcept { sk_X509_pop_free(certs, X509_free); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0)
            ::close(fd);
    }
};

// The most specific message OpenSSL queued (the last one), and an empty queue after.
std::string openssl_error() {
    std::string message;
    while (unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof(buffer));
        message = buffer;
    }
    return message.empty() ? "unknown OpenSSL error" : message;
}

[[noreturn]] void fail(std::string_view what, const std::string &path, std::string_view problem) {
    throw Error(ErrorKind::config, std::string(what) + " " + path + ": " + std::string(problem));
}

std::string read_file(std::string_view what, const std::string &path) {
    Fd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0)
        fail(what, path, std::string("cannot read: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(file.fd, &st) < 0)
        fail(what, path, std::string("cannot read: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        fail(what, path, "not a regular file");
    if (st.st_size > max_credential_file_size)
        fail(what, path, "too large to be a credential file");
    std::string content(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t done = 0;
    while (done < content.size()) {
        const ssize_t got = ::read(file.fd, content.data() + done, content.size() - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            fail(what, path, std::string("cannot read: ") + std::strerror(errno));
        if (got == 0)
            break;
        done += static_cast<std::size_t>(got);
    }
    content.resize(done);
    return content;
}

BioPtr memory_bio(const std::string &content) {
    BioPtr bio(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!bio)
        throw Error(ErrorKind::internal, "BIO_new_mem_buf: " + openssl_error());
    return bio;
}

// Without this OpenSSL would prompt on the terminal for an encrypted key.
extern "C" int refuse_passphrase(char *, int, int, void *) noexcept {
    return -1;
}

struct Credentials {
    X509Ptr certificate;
    std::vector<X509Ptr> chain;
    EvpPkeyPtr key;
};

Credentials load_pem(const ApnsSettings &settings) {
    Credentials credentials;
    const std::string certificate_pem = read_file("APNs certificate file", settings.cert_file);
    {
        BioPtr bio = memory_bio(certificate_pem);
        while (X509 *cert = PEM_read_bio_X509(bio.get(), nullptr, refuse_passphrase, nullptr)) {
            if (!credentials.certificate)
                credentials.certificate.reset(cert);
            else
                credentials.chain.emplace_back(cert);
        }
        // Reading stops at the end of the input with a "no start line" error: expected.
        const std::string error = openssl_error();
        if (!credentials.certificate)
            fail("APNs certificate file", settings.cert_file, "no PEM certificate: " + error);
    }
    const std::string &key_path =
        settings.key_file.empty() ? settings.cert_file : settings.key_file;
    const std::string key_pem =
        settings.key_file.empty() ? certificate_pem : read_file("APNs key file", key_path);
    BioPtr bio = memory_bio(key_pem);
    credentials.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, nullptr));
    if (!credentials.key) {
        const std::string error = openssl_error();
        const bool encrypted = key_pem.find("ENCRYPTED") != std::string::npos;
        fail("APNs key file", key_path,
             encrypted ? "the key is encrypted; a key without passphrase is needed"
                       : "no PEM private key: " + error);
    }
    return credentials;
}

Credentials load_pkcs12(const ApnsSettings &settings) {
    const std::string content = read_file("APNs PKCS#12 file", settings.p12_file);
    BioPtr bio = memory_bio(content);
    std::unique_ptr<PKCS12, Pkcs12Free> p12(d2i_PKCS12_bio(bio.get(), nullptr));
    if (!p12)
        fail("APNs PKCS#12 file", settings.p12_file, "not PKCS#12: " + openssl_error());
    X509 *cert = nullptr;
    EVP_PKEY *key = nullptr;
    STACK_OF(X509) *chain = nullptr;
    if (PKCS12_parse(p12.get(), settings.p12_password.c_str(), &key, &cert, &chain) != 1)
        fail("APNs PKCS#12 file", settings.p12_file,
             "cannot open (wrong password?): " + openssl_error());
    Credentials credentials;
    credentials.certificate.reset(cert);
    credentials.key.reset(key);
    std::unique_ptr<STACK_OF(X509), X509StackFree> chain_owner(chain);
    while (chain != nullptr && sk_X509_num(chain) > 0)
        credentials.chain.emplace_back(sk_X509_shift(chain));
    if (!credentials.certificate || !credentials.key)
        fail("APNs PKCS#12 file", settings.p12_file, "no certificate and key in it");
    return credentials;
}

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME *time) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(time, &tm) != 1)
        throw Error(ErrorKind::internal, "ASN1_TIME_to_tm: " + openssl_error());
    return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

std::string format_time(std::chrono::system_clock::time_point time) {
    const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
    std::tm tm{};
    ::gmtime_r(&seconds, &tm);
    char buffer[64];
    std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buffer;
}

std::string subject_uid(X509 *certificate) {
    const X509_NAME *subject = X509_get_subject_name(certificate);
    const int index = X509_NAME_get_index_by_NID(subject, NID_userId, -1);
    if (index < 0)
        return {};
    const ASN1_STRING *value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
    unsigned char *utf8 = nullptr;
    const int length = ASN1_STRING_to_UTF8(&utf8, value);
    if (length < 0)
        return {};
    std::string uid(reinterpret_cast<const char *>(utf8), static_cast<std::size_t>(length));
    OPENSSL_free(utf8);
    return uid;
}

} // namespace

TlsContext TlsContext::load(const ApnsSettings &settings) {
    const bool pkcs12 = !settings.p12_file.empty();
    if (!pkcs12 && settings.cert_file.empty())
        throw Error(ErrorKind::config, "no APNs certificate configured (xaps_apns_cert_file or "
                                       "xaps_apns_p12_file)");
    ERR_clear_error();
    Credentials credentials = pkcs12 ? load_pkcs12(settings) : load_pem(settings);
    const std::string &cert_path = pkcs12 ? settings.p12_file : settings.cert_file;
    const std::string &key_path = pkcs12                      ? settings.p12_file
                                  : settings.key_file.empty() ? settings.cert_file
                                                              : settings.key_file;

    if (X509_check_private_key(credentials.certificate.get(), credentials.key.get()) != 1) {
        ERR_clear_error();
        fail("APNs key file", key_path, "the key does not match the certificate in " + cert_path);
    }

    TlsContext context;
    context.expiry_ = to_time_point(X509_get0_notAfter(credentials.certificate.get()));
    if (X509_cmp_current_time(X509_get0_notAfter(credentials.certificate.get())) < 0)
        fail("APNs certificate file", cert_path,
             "the certificate expired on " + format_time(context.expiry_));
    if (X509_cmp_current_time(X509_get0_notBefore(credentials.certificate.get())) > 0)
        fail("APNs certificate file", cert_path,
             "the certificate is not valid before " +
                 format_time(to_time_point(X509_get0_notBefore(credentials.certificate.get()))));
    context.topic_ = subject_uid(credentials.certificate.get());
    if (context.topic_.empty())
        fail("APNs certificate file", cert_path,
             "the certificate subject has no UID (the APNs topic)");

    context.ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX *ctx = context.ctx_.get();
    if (ctx == nullptr)
        throw Error(ErrorKind::internal, "SSL_CTX_new: " + openssl_error());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // HTTP/2 forbids renegotiation and compression (RFC 9113, 9.2).
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read whole socket buffers, not a record header then its body: half the syscalls.
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_use_certificate(ctx, credentials.certificate.get()) != 1)
        fail("APNs certificate file", cert_path, "unusable certificate: " + openssl_error());
    for (const X509Ptr &intermediate : credentials.chain) {
        if (SSL_CTX_add1_chain_cert(ctx, intermediate.get()) != 1)
            fail("APNs certificate file", cert_path,
                 "unusable chain certificate: " + openssl_error());
    }
    if (SSL_CTX_use_PrivateKey(ctx, credentials.key.get()) != 1)
        fail("APNs key file", key_path, "unusable key: " + openssl_error());

    if (settings.ca_file.empty()) {
        if (SSL_CTX_set_default_verify_paths(ctx) != 1)
            throw Error(ErrorKind::config,
                        "cannot load the system trust store: " + openssl_error());
    } else {
        read_file("APNs CA file", settings.ca_file); // for a clear message when unreadable
        if (SSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr) != 1)
            fail("APNs CA file", settings.ca_file, "no usable certificate: " + openssl_error());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);

    static constexpr unsigned char alpn_h2[] = {2, 'h', '2'};
    if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2)) != 0)
        throw Error(ErrorKind::internal, "SSL_CTX_set_alpn_protos: " + openssl_error());
    return context;
}

} // namespace xaps
