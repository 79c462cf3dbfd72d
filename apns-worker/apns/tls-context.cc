#include "tls-context.h"

#include "credential-file.h"
#include "openssl-handles.h"
#include "utc-time.h"
#include "xaps-error.h"

#include <ctime>
#include <vector>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace xaps {
namespace {

using openssl::BioPtr;
using openssl::EvpPkeyPtr;
using openssl::X509Ptr;

BioPtr memory_bio(const std::string &content) {
    BioPtr bio(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!bio)
        throw Error(ErrorKind::internal, "BIO_new_mem_buf: " + openssl_error());
    return bio;
}

struct Credentials {
    X509Ptr certificate;
    std::vector<X509Ptr> chain;
    EvpPkeyPtr key;
};

Credentials load_pem(const ApnsSettings &settings) {
    Credentials credentials;
    const std::string certificate_pem =
        read_credential_file("APNs certificate file", settings.cert_file);
    {
        BioPtr bio = memory_bio(certificate_pem);
        while (X509 *cert =
                   PEM_read_bio_X509(bio.get(), nullptr, refuse_passphrase_callback, nullptr)) {
            if (!credentials.certificate)
                credentials.certificate.reset(cert);
            else
                credentials.chain.emplace_back(cert);
        }
        // Reading stops at the end of the input with a "no start line" error: expected.
        const std::string error = openssl_error();
        if (!credentials.certificate)
            credential_error("APNs certificate file", settings.cert_file,
                             "no PEM certificate: " + error);
    }
    const std::string &key_path =
        settings.key_file.empty() ? settings.cert_file : settings.key_file;
    const std::string key_pem = settings.key_file.empty()
                                    ? certificate_pem
                                    : read_credential_file("APNs key file", key_path);
    BioPtr bio = memory_bio(key_pem);
    credentials.key.reset(
        PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase_callback, nullptr));
    if (!credentials.key) {
        const std::string error = openssl_error();
        const bool encrypted = key_pem.find("ENCRYPTED") != std::string::npos;
        credential_error("APNs key file", key_path,
                         encrypted ? "the key is encrypted; a key without passphrase is needed"
                                   : "no PEM private key: " + error);
    }
    return credentials;
}

Credentials load_pkcs12(const ApnsSettings &settings) {
    const std::string content = read_credential_file("APNs PKCS#12 file", settings.p12_file);
    BioPtr bio = memory_bio(content);
    openssl::Pkcs12Ptr p12(d2i_PKCS12_bio(bio.get(), nullptr));
    if (!p12)
        credential_error("APNs PKCS#12 file", settings.p12_file, "not PKCS#12: " + openssl_error());
    X509 *cert = nullptr;
    EVP_PKEY *key = nullptr;
    STACK_OF(X509) *chain = nullptr;
    const char *password = settings.p12_password.c_str();
    // Exports with an empty password differ in whether the MAC was made with
    // "" or with no password at all: accept either, as PKCS12_parse does.
    const bool password_matches =
        PKCS12_mac_present(p12.get()) != 1 || PKCS12_verify_mac(p12.get(), password, -1) == 1 ||
        (settings.p12_password.empty() && PKCS12_verify_mac(p12.get(), nullptr, 0) == 1);
    if (!password_matches) {
        ERR_clear_error();
        credential_error("APNs PKCS#12 file", settings.p12_file,
                         settings.p12_password.empty()
                             ? "wrong password: the file needs one (xaps_apns_p12_password)"
                             : "wrong password (xaps_apns_p12_password)");
    }
    if (PKCS12_parse(p12.get(), password, &key, &cert, &chain) != 1)
        credential_error("APNs PKCS#12 file", settings.p12_file,
                         "cannot open (wrong password?): " + openssl_error());
    Credentials credentials;
    credentials.certificate.reset(cert);
    credentials.key.reset(key);
    openssl::X509StackPtr chain_owner(chain);
    while (chain != nullptr && sk_X509_num(chain) > 0)
        credentials.chain.emplace_back(sk_X509_shift(chain));
    if (!credentials.certificate || !credentials.key)
        credential_error("APNs PKCS#12 file", settings.p12_file, "no certificate and key in it");
    return credentials;
}

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME *time) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(time, &tm) != 1)
        throw Error(ErrorKind::internal, "ASN1_TIME_to_tm: " + openssl_error());
    return std::chrono::system_clock::from_time_t(::timegm(&tm));
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
    const openssl::StringPtr owner(reinterpret_cast<char *>(utf8));
    return std::string(owner.get(), static_cast<std::size_t>(length));
}

// The client certificate, checked as Apple would: usable, matching its key,
// valid now, naming the topic. Adds it to ctx and fills topic and expiry.
void use_client_certificate(const ApnsSettings &settings, SSL_CTX *ctx, std::string &topic,
                            std::optional<std::chrono::system_clock::time_point> &expiry) {
    const bool pkcs12 = !settings.p12_file.empty();
    Credentials credentials = pkcs12 ? load_pkcs12(settings) : load_pem(settings);
    const std::string &cert_path = pkcs12 ? settings.p12_file : settings.cert_file;
    const std::string &key_path = pkcs12                      ? settings.p12_file
                                  : settings.key_file.empty() ? settings.cert_file
                                                              : settings.key_file;
    X509 *certificate = credentials.certificate.get();

    if (X509_check_private_key(certificate, credentials.key.get()) != 1) {
        ERR_clear_error();
        credential_error("APNs key file", key_path,
                         "the key does not match the certificate in " + cert_path);
    }
    const auto not_after = to_time_point(X509_get0_notAfter(certificate));
    if (X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0)
        credential_error("APNs certificate file", cert_path,
                         "the certificate expired on " + iso8601_utc(not_after));
    if (X509_cmp_current_time(X509_get0_notBefore(certificate)) > 0)
        credential_error("APNs certificate file", cert_path,
                         "the certificate is not valid before " +
                             iso8601_utc(to_time_point(X509_get0_notBefore(certificate))));
    topic = subject_uid(certificate);
    if (topic.empty())
        credential_error("APNs certificate file", cert_path,
                         "the certificate subject has no UID (the APNs topic)");
    expiry = not_after;

    if (SSL_CTX_use_certificate(ctx, certificate) != 1)
        credential_error("APNs certificate file", cert_path,
                         "unusable certificate: " + openssl_error());
    for (const X509Ptr &intermediate : credentials.chain) {
        if (SSL_CTX_add1_chain_cert(ctx, intermediate.get()) != 1)
            credential_error("APNs certificate file", cert_path,
                             "unusable chain certificate: " + openssl_error());
    }
    if (SSL_CTX_use_PrivateKey(ctx, credentials.key.get()) != 1)
        credential_error("APNs key file", key_path, "unusable key: " + openssl_error());
}

} // namespace

TlsContext TlsContext::load(const ApnsSettings &settings) {
    const bool certificate = !settings.p12_file.empty() || !settings.cert_file.empty();
    if (!certificate && settings.token_key_file.empty())
        throw Error(ErrorKind::config,
                    "no APNs credential configured (xaps_apns_cert_file, xaps_apns_p12_file or "
                    "xaps_apns_token_key_file)");
    if (!certificate && settings.topic.empty())
        throw Error(ErrorKind::config, "xaps_apns_topic is not set: token auth with " +
                                           settings.token_key_file +
                                           " needs the topic pushes are sent to");
    ERR_clear_error();
    TlsContext context;
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
    if (certificate)
        use_client_certificate(settings, ctx, context.topic_, context.expiry_);
    else
        context.topic_ = settings.topic; // the provider token authenticates each request

    if (settings.ca_file.empty()) {
        if (SSL_CTX_set_default_verify_paths(ctx) != 1)
            throw Error(ErrorKind::config,
                        "cannot load the system trust store: " + openssl_error());
    } else {
        // For a clear message when unreadable.
        read_credential_file("APNs CA file", settings.ca_file);
        if (SSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr) != 1)
            credential_error("APNs CA file", settings.ca_file,
                             "no usable certificate: " + openssl_error());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);

    static constexpr unsigned char alpn_h2[] = {2, 'h', '2'};
    if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2)) != 0)
        throw Error(ErrorKind::internal, "SSL_CTX_set_alpn_protos: " + openssl_error());
    return context;
}

} // namespace xaps
