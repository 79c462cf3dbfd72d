// A simulator of Apple's legacy self-service push certificate service
// (identity.apple.com/pushcert/caservice/new and .../renew) for tests: a TLS
// HTTP/1.1 server on 127.0.0.1, on its own thread, that checks a request the
// way the real service had to (vendor signature, Apple ID and password hash,
// one valid CSR per known ServiceType, the serials being renewed) and
// answers with certificates signed by the test CA, or with an error.
//
// It is written from the wire format alone (see provisioning/caservice-messages.h)
// and shares no code with the client it tests.
//
// Every public method may be called from any thread while the server runs.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace xaps::test {

struct MockCaServiceConfig {
    std::string cert_file; // PEM server certificate for 127.0.0.1
    std::string key_file;
    std::string issuer_cert_file; // PEM CA that signs the push certificates
    std::string issuer_key_file;
    // PEM (or DER back to back): requests must carry this chain and be
    // signed with the private key of its first certificate.
    std::string vendor_chain_file;
    std::string apple_id;
    std::string password_hash; // compared as sent
    // Issued subjects are UID=com.apple.<service>.XServer.<uuid>, CN=APSP:<uuid>, C=US.
    std::string account_uuid = "6a1d3c52-9f4e-4b7a-8c2d-0e5f4a3b2c1d";
    std::chrono::seconds validity{std::chrono::hours{24 * 365}};
};

struct MockCaServiceEntry {
    std::int64_t request_no = -1;
    std::string service_type;
    std::string description;
    std::string csr_pem;
    std::string
        csr_subject; // OpenSSL one-line form, e.g. "/C=US/CN=com.apple.servermgrd.apns.mail"
    bool csr_signature_valid = false;
    std::string certificate_serial; // CertificateSerialNumber, renewals only
};

struct MockCaServiceRequest {
    std::string method;
    std::string path;
    std::map<std::string, std::string> headers; // lower-case names
    std::string body;
    // From the outer plist.
    bool signed_request = false; // PushCertSignedRequest
    bool chain_trusted = false;  // the chain starts with the configured vendor certificate
    bool signature_valid = false;
    std::string request_plist; // PushCertRequestPlist as sent
    // From the request plist.
    std::map<std::string, std::string> header_fields; // Header dict
    std::string profile_type;
    std::string requester_type;
    std::string apple_id;
    std::string password_hash;
    std::vector<MockCaServiceEntry> entries;
    // Empty when certificates were issued; otherwise the ErrorCode and
    // ErrorMessage answered.
    std::int64_t error_code = 0;
    std::string error_message;
};

struct MockCaServiceError {
    std::int64_t code = 0;
    std::string message;
    std::string description;
};
// Apple's answers, as users of macOS Server and xapsd recorded them.
MockCaServiceError discontinued_service_error(); // -80010 "ServiceType is Invalid."
MockCaServiceError bad_credentials_error();      // -80004 "Account Name - Password invalid."
// The simulator's own codes for checks whose real code nobody recorded.
inline constexpr std::int64_t mock_error_malformed = -1;
inline constexpr std::int64_t mock_error_bad_signature = -2;
inline constexpr std::int64_t mock_error_unknown_serial = -3;

struct MockHttpAnswer {
    int status = 200;
    std::string body;
    bool chunked = false; // Transfer-Encoding: chunked instead of Content-Length
};

class MockCaServiceServer {
public:
    // Loads the certificates and keys; throws xaps::Error when unusable.
    explicit MockCaServiceServer(MockCaServiceConfig config);
    ~MockCaServiceServer(); // stops
    MockCaServiceServer(const MockCaServiceServer &) = delete;
    MockCaServiceServer &operator=(const MockCaServiceServer &) = delete;

    void start(); // listens on 127.0.0.1, any free port; throws xaps::Error
    void stop();  // joins the server thread; requests are kept
    std::uint16_t port() const;
    // The base URL for CaServiceSettings::url: https://127.0.0.1:<port>/pushcert/caservice
    std::string url() const;

    std::vector<MockCaServiceRequest> requests() const;

    // Every later valid request is answered with this error instead of
    // certificates (nullopt: issue again).
    void set_error(std::optional<MockCaServiceError> error);
    // Every later request is answered with exactly this, unchecked.
    void set_raw_answer(std::optional<MockHttpAnswer> answer);
    // Every later answer waits this long first (stop() cuts it short).
    void set_answer_delay(std::chrono::milliseconds delay);
    // Validity of the certificates issued from now on.
    void set_validity(std::chrono::seconds validity);

    // Serials (as CertificateSerialNumber spells them: lower-case hex, no
    // leading zeros) of the certificates issued, by ServiceType, oldest first.
    std::vector<std::string> issued_serials(const std::string &service_type) const;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace xaps::test
