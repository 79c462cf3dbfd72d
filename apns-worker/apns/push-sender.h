// The seam between deciding whom to push (PushScheduler) and talking to Apple
// (ApnsClient). The sender owns retries of transient failures (429, 5xx,
// connection loss, GOAWAY); it reports each push once, when it is final.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace xaps {

struct Push {
    std::string device_token; // hex, as registered
    std::string account_id;   // goes into {"aps":{"account-id":...}}
    // The payload's "m": mailbox_name_digest() of each registered mailbox the
    // push is about (apns-payload.h). Empty: no "m", and iOS fetches the
    // INBOX only.
    std::vector<std::string> mailbox_hashes{};
};

struct PushOutcome {
    enum class Result {
        delivered,   // Apple answered 200
        device_gone, // 410 Unregistered, 400 BadDeviceToken / DeviceTokenNotForTopic
        rejected,    // any other final answer from Apple (403, 413, other 400s)
        failed,      // gave up: Apple unreachable or transient errors past the retry bound
    };
    Result result = Result::failed;
    int http_status = 0; // 0 when Apple never answered
    std::string reason;  // Apple's "reason", or our description of the failure
    // With 410: when Apple learned the token was gone (ms since the epoch).
    std::optional<std::int64_t> unregistered_at_ms;
    std::string apns_id;
};

class PushSender {
public:
    using Done = std::function<void(const PushOutcome &)>;
    virtual ~PushSender() = default;
    // Never blocks; `done` is called exactly once, later, from the event loop
    // (never from within send()). `done` may send() again; it must not throw:
    // it runs inside the sender's bookkeeping, where nobody could handle it.
    virtual void send(const Push &push, Done done) = 0;
    // Why a push sent now cannot reach Apple (no working connection, pushing
    // disabled), for an admin waiting for an answer; empty when it can, and
    // while a first connection is still being made.
    virtual std::string unavailable_reason() const { return {}; }
};

} // namespace xaps
