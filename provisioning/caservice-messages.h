// The property lists exchanged with Apple's legacy certificate service
// (https://identity.apple.com/pushcert/caservice/new and .../renew), as
// macOS Server's servermgrd sent them and the Go xapsd reproduced them
// (pkg/apple_xserver_certs/request.go and response.go before xapsd removed
// them in 2025):
//
//   body = <plist><dict>
//     PushCertCertificateChain  <data>  the vendor chain, DER back to back
//     PushCertRequestPlist      <data>  the request plist below, as XML bytes
//     PushCertSignature         <data>  RSA PKCS#1 v1.5 SHA-1 of those bytes, vendor key
//     PushCertSignedRequest     <true/>
//   request = <plist><dict>
//     Header  { ClientApplicationCredential "1", ClientApplicationName "XServer",
//               ClientIPAddress "1", ClientOSName "MAC OSX", ClientOSVersion "2.1",
//               LanguagePreference "1", TransactionId "1", Version "1" }
//     Request { CertRequestList [ { CSR <PEM>, CertRequestNo <n>,
//                                   CertificateSerialNumber <hex> (renewals only),
//                                   Description "<host> - apns:<service>",
//                                   ServiceType "Service_Mail" ... } ],
//               ProfileType "Production", RequesterType "XServer",
//               User { AccountName <Apple ID>, PasswordHash <SHA-256 hex> } }
//   response = <plist><dict>
//     Response { Status { ErrorCode <int>, ErrorMessage, ErrorDescription },
//                Certificates [ { Certificate <PEM>, CertRequestNo, Description,
//                                 ServiceType } ] }
//     Header   { ... echoed ... }
#pragma once

#include "caservice-crypto.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xaps::caservice {

// One push certificate macOS Server asked for. It always asked for all five
// at once; the mail one is what we use.
struct ServiceSpec {
    std::string_view short_name;      // our file names: "mail" -> mail.pem, mail.key
    std::string_view service_type;    // "Service_Mail"
    std::string_view csr_common_name; // "com.apple.servermgrd.apns.mail"
    std::string_view description;     // "apns:com.apple.mail", after "<host> - "
    int request_no;
};
// In macOS Server's order; CertRequestNo is the position.
const std::vector<ServiceSpec> &macos_server_services();
const ServiceSpec &mail_service();

struct CertRequestEntry {
    const ServiceSpec *service = nullptr;
    std::string csr_pem;
    std::string renew_serial_hex; // empty for a new certificate
};

struct CertRequest {
    std::string apple_id;
    std::string password_hash; // SHA-256 hex of the Apple ID password
    std::string hostname;      // shown on Apple's certificate portal
    std::vector<CertRequestEntry> entries;
};

// The inner request plist, as XML: the exact bytes that are signed.
std::string build_request_plist(const CertRequest &request);
// The HTTP body: the request plist wrapped with the vendor chain and signature.
std::string build_signed_body(const std::string &request_plist, const VendorCredential &vendor);

struct IssuedCertificate {
    std::int64_t request_no = -1;
    std::string service_type;
    std::string certificate_pem;
};

struct CertResponse {
    std::int64_t error_code = 0; // 0: success; Apple's codes are negative (-80010, -80004...)
    std::string error_message;
    std::string error_description;
    std::vector<IssuedCertificate> certificates;
};

// Throws Error(invalid_input) when body is not a plist of the shape above.
CertResponse parse_response(std::string_view body);

// Apple's error codes we know, as observed by macOS Server and xapsd users.
inline constexpr std::int64_t error_service_discontinued = -80010; // "ServiceType is Invalid."
inline constexpr std::int64_t error_bad_credentials = -80004; // "Account Name - Password invalid."

// One line for the admin: Apple's code and words (made printable and
// bounded, they come from the network) and what to do about it.
std::string describe_service_error(const CertResponse &response);

} // namespace xaps::caservice
