// A mock of Apple's push provider API (APNs) for tests, the demo and the
// benchmarks: a real TLS + HTTP/2 server on 127.0.0.1 running on its own
// thread, recording every request and answering as a test scripts it.
//
// Every public method may be called from any thread while the server thread
// runs; the ones that act on live connections (send_goaway,
// set_max_concurrent_streams, drop_connections) return once the server thread
// has carried them out. A responder runs on the server thread.
#pragma once

#include "provider-token-verifier.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace xaps::test {

struct MockApnsConfig {
    std::string cert_file; // PEM server certificate (chain)
    std::string key_file;  // PEM private key of cert_file
    // When set, clients must present a certificate that verifies against
    // these trust anchors, as APNs requires with certificate auth.
    std::string client_ca_file;
    uint16_t port = 0; // 0: any free port, see MockApnsServer::port()
    uint32_t max_concurrent_streams = 1000;
    // Keep every request for requests(). The mock-apns executable turns this
    // off so that long benchmarks do not grow without bound.
    bool record_requests = true;
    // Token auth, checked like APNs does: a request without a client
    // certificate must carry `authorization: bearer <JWT>`, ES256-signed with
    // this key, with this kid and iss, an iat neither in the future nor
    // older than max_age. Otherwise the answer is 403 MissingProviderToken,
    // InvalidProviderToken or ExpiredProviderToken, or 429
    // TooManyProviderTokenUpdates for a new token sooner than
    // min_renewal_interval after the one in use.
    std::optional<MockApnsTokenAuth> token_auth;
    // For the benchmarks' reference load, h2load, which can present no client
    // certificate: with client_ca_file a certificate is asked for but not
    // required, and a request without one is accepted (its apns-topic is
    // required) instead of 403 MissingProviderToken. Apple has no such mode.
    bool accept_anonymous_clients = false;
};

// Every request is checked as APNs documents it before the responder is
// asked; what APNs would refuse gets Apple's status and reason, is counted
// in requests_refused() and listed in refused_requests(), never in
// requests(). In this order:
//   405 MethodNotAllowed      :method is not POST
//   404 BadPath               :path is not /3/device/<token>
//   400 MissingDeviceToken    :path is /3/device/ with no token
//   403 MissingProviderToken  no client certificate and no authorization
//                             header (or no token_auth configured), unless
//                             accept_anonymous_clients
//   403 InvalidProviderToken, ExpiredProviderToken, 429
//       TooManyProviderTokenUpdates   see MockApnsConfig::token_auth
//   400 BadDeviceToken        not an even number of hex digits, 64 (Apple's
//                             32 bytes) to 200 (the most the product takes)
//   400 MissingTopic          no apns-topic with token auth, or with a
//                             certificate without a UID; a certificate's
//                             UID stands for an absent header, as at Apple
//   400 BadTopic              apns-topic is not the certificate's UID
//   400 TopicDisallowed       apns-topic is not one of token_auth->topics
//   400 BadMessageId          apns-id is not a UUID (8-4-4-4-12 hex digits)
//   400 BadExpirationDate     apns-expiration is not a decimal integer
//   400 BadPriority           apns-priority is not 10, 5 or 1
//   400 InvalidPushType       apns-push-type is absent or not a documented
//                             type (Apple may silently drop an iOS push
//                             without it: a refusal makes that visible)
//   400 BadCollapseId         apns-collapse-id longer than 64 bytes
//   400 PayloadEmpty          no body
//   413 PayloadTooLarge       a body over 4096 bytes
//   400 PayloadEmpty          a body that is not a JSON object (Apple names no
//                             reason for it; this is the closest it documents)

struct MockApnsRequest {
    std::string method;
    std::string path;
    // Every header with its lower-case name, pseudo-headers (":method",
    // ":path", ":scheme", ":authority") included.
    std::map<std::string, std::string> headers;
    std::string body;
    // The client certificate's subject in OpenSSL's one-line form, e.g.
    // "/UID=com.apple.mail.XServer.<uuid>/CN=APSP:<uuid>/C=US"; empty when
    // the client sent no certificate.
    std::string client_subject;
    std::string client_uid; // the UID attribute of that subject: the APNs topic
    // With token_auth: the JWT the request carried (without "bearer "), and
    // its iat when readable (0 otherwise).
    std::string provider_token;
    int64_t token_issued_at = 0;
    // The last path segment of "/3/device/<token>"; empty for other paths.
    std::string device_token;
    // From a body {"aps":{"account-id":"...","m":[...]}}, what iOS Mail
    // reads: the account id (empty when absent or not a string) and "m"
    // (nullopt when absent; entries that are not strings are left out and
    // clear mailbox_hashes_valid, as does an "m" that is not an array).
    std::string account_id;
    std::optional<std::vector<std::string>> mailbox_hashes;
    bool mailbox_hashes_valid = true;
    // Set when the mock refused the request as APNs would (see above); the
    // responder was not asked.
    int refused_status = 0;
    std::string refused_reason;
    std::chrono::steady_clock::time_point received;
    size_t connection_index = 0; // 0 for the first connection accepted, and so on
    int32_t stream_id = 0;
};

// What a GOAWAY says about the streams the server already received.
enum class GoawayStreams {
    finish, // last stream id = the last one received: they are still answered
    refuse, // last stream id = 0 and REFUSED_STREAM for each: the client must send them again
};

struct MockApnsResponse {
    int status = 200;
    std::string reason; // the JSON "reason" of a non-200 answer; empty: a default for the status
    std::optional<int64_t> timestamp_ms; // the JSON "timestamp" of a 410; empty: now
    // Answer this much later, without stalling other streams or connections.
    std::chrono::milliseconds delay{0};
};

class MockApnsServer {
public:
    using Responder = std::function<MockApnsResponse(const MockApnsRequest &)>;

    // Loads the certificates; throws xaps::Error when they are unusable.
    explicit MockApnsServer(MockApnsConfig config);
    ~MockApnsServer(); // stops
    MockApnsServer(const MockApnsServer &) = delete;
    MockApnsServer &operator=(const MockApnsServer &) = delete;

    // Listens and starts the server thread. After stop(), listens again on
    // the same port. Throws xaps::Error when it cannot listen.
    void start();
    // Closes every connection and the listening socket, joins the thread.
    // Answers still delayed are dropped. Recorded requests are kept.
    void stop();
    uint16_t port() const;

    // The requests APNs would accept: the ones the responder answered.
    std::vector<MockApnsRequest> requests() const;
    // The requests the mock refused as APNs would, with refused_status and
    // refused_reason set. A test that expects pushes expects none here.
    std::vector<MockApnsRequest> refused_requests() const;
    void clear_requests(); // both lists and both counts
    // Requests accepted since construction (or clear_requests()), recorded or not.
    size_t requests_received() const;
    // Requests refused since construction (or clear_requests()), recorded or not.
    size_t requests_refused() const;
    // True once requests_received() >= count, false after timeout.
    bool wait_for_requests(size_t count, std::chrono::milliseconds timeout) const;

    // Decides the answer to every later request APNs would accept (the
    // others are refused before it is asked). Without one (or after
    // set_responder(nullptr)) the mock answers 200.
    // An exception thrown by the responder makes a 500 InternalServerError.
    void set_responder(Responder responder);

    // GOAWAY (NO_ERROR) on every live connection, with {"reason":"<reason>"}
    // as debug data like APNs. Once its open streams are answered (finish) or
    // refused (refuse), the server closes the connection.
    void send_goaway(const std::string &reason = "Shutdown",
                     GoawayStreams streams = GoawayStreams::finish);
    // SETTINGS_MAX_CONCURRENT_STREAMS to every live connection, and the
    // initial value for new ones.
    void set_max_concurrent_streams(uint32_t max_streams);
    // Closes every TCP connection abruptly (RST), without TLS close_notify or GOAWAY.
    void drop_connections();
    // With token_auth: every token issued up to now is answered 403
    // ExpiredProviderToken from here on, as Apple does once they are an hour
    // old; a token issued later passes.
    void expire_provider_tokens();

    size_t connections_accepted() const; // TCP connections accepted
    size_t handshake_failures() const;   // TLS handshakes that failed (e.g. untrusted client cert)
    size_t open_connections() const;     // connections currently open (TLS done or not)
    size_t pings_received() const;       // HTTP/2 PING frames (not ACKs) received
    // True once open_connections() == count, false after timeout.
    bool wait_for_open_connections(size_t count, std::chrono::milliseconds timeout) const;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace xaps::test
