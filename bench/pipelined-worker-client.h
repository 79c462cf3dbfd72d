// A worker protocol client that pipelines, as a busy LMTP process does with
// NOTIFY: it writes a whole batch of request lines without waiting and counts
// the final replies as they come back, so the worker, not this client's round
// trips, sets the pace. For one request at a time use tests/support's
// WorkerClient.
#pragma once

#include "line-connection.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace xaps::bench {

class PipelinedWorkerClient {
public:
    // Connects and exchanges the VERSION handshake.
    explicit PipelinedWorkerClient(const std::string &socket_path);

    struct Outcome {
        std::size_t ok = 0;
        std::size_t failed = 0;
        std::string first_failure; // the first FAIL line, for the error message
    };
    // Writes `requests` (encoded lines, see protocol::encode_request) and
    // reads until `count` final replies (OK or FAIL) arrived. Throws
    // xaps::Error(unavailable) on timeout or when the worker hangs up.
    Outcome exchange(std::string_view requests, std::size_t count, test::Milliseconds timeout);

private:
    test::LineConnection connection_;
    std::string unread_; // an incomplete reply line from the last read
};

} // namespace xaps::bench
