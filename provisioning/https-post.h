// One blocking HTTPS POST with a bounded time and a bounded answer, for the
// legacy certificate service (one exchange per `doveadm xaps provision`, not
// the push path). Built on libcurl: it already does HTTP/1.1 framing (chunked
// answers, Content-Length), TLS peer and host name checks and timeouts,
// which would otherwise be hand-written here.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace xaps {

struct HttpsPostRequest {
    std::string url; // https:// only; redirects are not followed
    std::string body;
    std::vector<std::string> headers; // "Name: value"
    std::string ca_file;              // trust anchors; empty: the system store
    // The whole exchange: connect, TLS, send, answer.
    std::chrono::milliseconds timeout{std::chrono::seconds{30}};
    std::size_t max_response_bytes = 1024 * 1024;
};

struct HttpsPostResponse {
    long status = 0;
    std::string body;
};

// Blocks for at most request.timeout. Throws Error(unavailable) when no
// answer came (connect, TLS, timeout), and Error(invalid_input) when the
// answer is larger than max_response_bytes; any HTTP status is returned.
HttpsPostResponse https_post(const HttpsPostRequest &request);

} // namespace xaps
