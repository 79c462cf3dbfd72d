#include "caservice-crypto.h"

#include "credential-file.h"
#include "xaps-error.h"

#include <algorithm>
#include <cctype>
#include <ctime>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

namespace xaps::caservice {
namespace {

using openssl::BignumPtr;
using openssl::BioPtr;
using openssl::EvpMdCtxPtr;
using openssl::StringPtr;
using openssl::X509ReqPtr;

// An encrypted key fails instead of prompting on the admin's terminal.
extern "C" int caservice_refuse_passphrase(char *, int, int, void *) noexcept {
    return -1;
}

[[noreturn]] void fail_internal(const std::string &what) {
    throw Error(ErrorKind::internal, what + ": " + openssl_error());
}

bool looks_like_pem(std::string_view content) {
    return content.find("-----BEGIN ") != std::string_view::npos;
}

BioPtr memory_bio(std::string_view data) {
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (!bio) {
        fail_internal("BIO_new_mem_buf");
    }
    return bio;
}

std::string bio_contents(BIO *bio) {
    char *data = nullptr;
    long size = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(size));
}

std::string certificate_der(X509 *cert) {
    int size = i2d_X509(cert, nullptr);
    if (size <= 0) {
        fail_internal("i2d_X509");
    }
    std::string der(static_cast<std::size_t>(size), '\0');
    auto *out = reinterpret_cast<unsigned char *>(der.data());
    i2d_X509(cert, &out);
    return der;
}

EvpPkeyPtr parse_vendor_key(const std::string &content) {
    if (looks_like_pem(content)) {
        return private_key_from_pem(content);
    }
    // d2i_AutoPrivateKey takes PKCS#1 (what xapsd embedded) as well as PKCS#8.
    auto *in = reinterpret_cast<const unsigned char *>(content.data());
    return EvpPkeyPtr(d2i_AutoPrivateKey(nullptr, &in, static_cast<long>(content.size())));
}

// The chain as DER certificates back to back; empty when unparsable.
std::string parse_vendor_chain(const std::string &content, X509Ptr &first_r) {
    std::string chain;
    if (looks_like_pem(content)) {
        BioPtr bio = memory_bio(content);
        while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
            chain += certificate_der(cert.get());
            if (!first_r) {
                first_r = std::move(cert);
            }
        }
        ERR_clear_error(); // the read past the last certificate
        return chain;
    }
    auto *in = reinterpret_cast<const unsigned char *>(content.data());
    const auto *end = in + content.size();
    while (in < end) {
        const unsigned char *start = in;
        X509Ptr cert(d2i_X509(nullptr, &in, end - in));
        if (!cert) {
            ERR_clear_error();
            return {};
        }
        chain.append(reinterpret_cast<const char *>(start), static_cast<std::size_t>(in - start));
        if (!first_r) {
            first_r = std::move(cert);
        }
    }
    return chain;
}

} // namespace

VendorCredential load_vendor_credential(const std::string &key_file,
                                        const std::string &chain_file) {
    constexpr std::string_view key_setting = "xaps_caservice_vendor_key_file";
    constexpr std::string_view chain_setting = "xaps_caservice_vendor_chain_file";
    if (key_file.empty() || chain_file.empty()) {
        throw Error(ErrorKind::config,
                    std::string(key_setting) + " and " + std::string(chain_setting) +
                        " must both be set: the vendor key and certificate chain from macOS "
                        "Server sign every request to Apple's certificate service");
    }
    VendorCredential vendor;
    vendor.key = parse_vendor_key(read_credential_file(key_setting, key_file));
    if (!vendor.key) {
        throw Error(ErrorKind::config,
                    std::string(key_setting) + " " + key_file +
                        ": not an unencrypted private key (PEM or DER): " + openssl_error());
    }
    X509Ptr first;
    vendor.chain_der = parse_vendor_chain(read_credential_file(chain_setting, chain_file), first);
    if (vendor.chain_der.empty() || !first) {
        throw Error(ErrorKind::config, std::string(chain_setting) + " " + chain_file +
                                           ": not certificates (PEM, or DER back to back)");
    }
    if (!certificate_matches_key(first.get(), vendor.key.get())) {
        throw Error(ErrorKind::config, std::string(key_setting) + " " + key_file +
                                           " does not belong to the first certificate of " +
                                           chain_file);
    }
    return vendor;
}

std::string sign_sha1(EVP_PKEY *key, std::string_view data) {
    EvpMdCtxPtr ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX *pkey_ctx = nullptr;
    if (!ctx || EVP_DigestSignInit(ctx.get(), &pkey_ctx, EVP_sha1(), nullptr, key) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) != 1) {
        fail_internal("signing the certificate request");
    }
    std::size_t size = 0;
    const auto *in = reinterpret_cast<const unsigned char *>(data.data());
    if (EVP_DigestSign(ctx.get(), nullptr, &size, in, data.size()) != 1) {
        fail_internal("signing the certificate request");
    }
    std::string signature(size, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char *>(signature.data()), &size, in,
                       data.size()) != 1) {
        fail_internal("signing the certificate request");
    }
    signature.resize(size);
    return signature;
}

EvpPkeyPtr generate_rsa_key() {
    EvpPkeyPtr key(EVP_RSA_gen(2048));
    if (!key) {
        fail_internal("generating an RSA key");
    }
    return key;
}

std::string make_csr_pem(EVP_PKEY *key, std::string_view common_name) {
    X509ReqPtr req(X509_REQ_new());
    if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) {
        fail_internal("X509_REQ_new");
    }
    X509_NAME *name = X509_REQ_get_subject_name(req.get());
    // Country before common name: the order Go's pkix.Name gave xapsd's requests.
    const std::string cn(common_name);
    if (X509_NAME_add_entry_by_NID(name, NID_countryName, MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char *>("US"), -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char *>(cn.c_str()), -1, -1,
                                   0) != 1 ||
        X509_REQ_set_pubkey(req.get(), key) != 1 ||
        X509_REQ_sign(req.get(), key, EVP_sha1()) <= 0) {
        fail_internal("making a certificate signing request");
    }
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
        fail_internal("PEM_write_bio_X509_REQ");
    }
    return bio_contents(bio.get());
}

std::string private_key_to_pem(EVP_PKEY *key) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio ||
        PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
        fail_internal("PEM_write_bio_PrivateKey");
    }
    return bio_contents(bio.get());
}

EvpPkeyPtr private_key_from_pem(std::string_view pem) {
    BioPtr bio = memory_bio(pem);
    EvpPkeyPtr key(
        PEM_read_bio_PrivateKey(bio.get(), nullptr, caservice_refuse_passphrase, nullptr));
    return key;
}

X509Ptr certificate_from_pem(std::string_view pem) {
    BioPtr bio = memory_bio(pem);
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) {
        ERR_clear_error();
    }
    return cert;
}

std::string certificate_to_pem(X509 *cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
        fail_internal("PEM_write_bio_X509");
    }
    return bio_contents(bio.get());
}

bool certificate_matches_key(X509 *cert, EVP_PKEY *key) {
    EVP_PKEY *public_key = X509_get0_pubkey(cert);
    bool matches = public_key != nullptr && EVP_PKEY_eq(public_key, key) == 1;
    ERR_clear_error();
    return matches;
}

std::string serial_hex(X509 *cert) {
    BignumPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
    if (!serial) {
        fail_internal("reading a certificate serial number");
    }
    StringPtr hex(BN_bn2hex(serial.get()));
    if (!hex) {
        fail_internal("BN_bn2hex");
    }
    std::string text(hex.get());
    std::string sign;
    if (!text.empty() && text.front() == '-') {
        sign = "-";
        text.erase(0, 1);
    }
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::size_t digits = text.find_first_not_of('0');
    text = digits == std::string::npos ? "0" : text.substr(digits);
    return sign + text;
}

std::chrono::system_clock::time_point not_after(X509 *cert) {
    std::tm when{};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &when) != 1) {
        fail_internal("reading a certificate's notAfter");
    }
    return std::chrono::system_clock::from_time_t(timegm(&when));
}

} // namespace xaps::caservice
