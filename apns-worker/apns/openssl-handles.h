// Owning handles for OpenSSL objects: std::unique_ptr with the object's own
// free function, so that every early return and exception releases them.
#pragma once

#include <memory>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace xaps::openssl {

template <auto free_function> struct Free {
    template <typename Object> void operator()(Object *object) const noexcept {
        free_function(object);
    }
};

// OPENSSL_free and sk_X509_pop_free are macros: these give them an address.
inline void free_string(char *text) noexcept {
    OPENSSL_free(text);
}
inline void free_certificate_stack(STACK_OF(X509) * certificates) noexcept {
    sk_X509_pop_free(certificates, X509_free);
}

using BioPtr = std::unique_ptr<BIO, Free<BIO_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, Free<BN_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, Free<ECDSA_SIG_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, Free<EVP_MD_CTX_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using Pkcs12Ptr = std::unique_ptr<PKCS12, Free<PKCS12_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, Free<SSL_CTX_free>>;
using StringPtr = std::unique_ptr<char, Free<free_string>>;
using X509Ptr = std::unique_ptr<X509, Free<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, Free<X509_REQ_free>>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), Free<free_certificate_stack>>;

} // namespace xaps::openssl
