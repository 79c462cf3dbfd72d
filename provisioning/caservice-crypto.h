// The cryptography of Apple's legacy self-service certificate provisioning
// (the "caservice" macOS Server used, and the Go xapsd after it): RSA keys,
// the certificate signing requests, the vendor credential that signs each
// request, and what the provisioning needs to know about a certificate.
#pragma once

#include "openssl-handles.h"

#include <chrono>
#include <string>
#include <string_view>

namespace xaps::caservice {

using openssl::EvpPkeyPtr;
using openssl::X509Ptr;

// macOS Server's identity: the private key and certificate chain it signs
// every request with. The admin extracts them from their own copy of macOS
// Server; we never ship them.
struct VendorCredential {
    EvpPkeyPtr key;
    std::string chain_der; // DER certificates back to back, the key's own first
};

// Reads the key (PEM, or DER as PKCS#1 or PKCS#8) and the chain (PEM
// certificates, or DER certificates back to back). Throws Error(config)
// naming the file: unreadable, unparsable, or key not matching the chain's
// first certificate.
VendorCredential load_vendor_credential(const std::string &key_file, const std::string &chain_file);

// RSA PKCS#1 v1.5 over SHA-1 of data, as macOS Server signed
// PushCertRequestPlist. Throws Error(internal).
std::string sign_sha1(EVP_PKEY *key, std::string_view data);

// A new RSA-2048 key, the size macOS Server requested certificates for.
EvpPkeyPtr generate_rsa_key();

// A PEM "CERTIFICATE REQUEST" for subject C=US, CN=common_name, signed with
// SHA-1 like macOS Server's (Apple's service predates SHA-2 requests).
std::string make_csr_pem(EVP_PKEY *key, std::string_view common_name);

std::string private_key_to_pem(EVP_PKEY *key);         // unencrypted PKCS#8
EvpPkeyPtr private_key_from_pem(std::string_view pem); // nullptr when unparsable
X509Ptr certificate_from_pem(std::string_view pem);    // nullptr when unparsable
std::string certificate_to_pem(X509 *cert);

bool certificate_matches_key(X509 *cert, EVP_PKEY *key);
// The serial number as Go's big.Int.Text(16) printed it, which is what
// xapsd sent as CertificateSerialNumber: lower-case hex, no leading zeros.
std::string serial_hex(X509 *cert);
std::chrono::system_clock::time_point not_after(X509 *cert);

} // namespace xaps::caservice
