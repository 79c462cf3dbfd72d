// Whether the worker can push at all, and why not: the one place that knows.
// It is closed while no APNs credential works (none configured, an unusable
// one, a certificate that expired), and then:
//   * REGISTER and TEST are refused as unavailable (a phone must not believe
//     it will get pushes), with the reason;
//   * every push fails with the reason, answered from a later loop turn;
//   * STATUS shows the reason as credential_problem.
// Open, it forwards pushes to the APNs client and answers REGISTER with its
// topic. Pushes already forwarded are the client's to finish: whoever closes
// the gate for good also shuts the client down (ApnsClient::disable()).
#pragma once

#include "event-loop.h"
#include "push-sender.h"

#include <string>

namespace xaps {

class PushGate final : public PushSender {
public:
    // Closed with `reason` until open() is called.
    PushGate(EventLoop &loop, std::string reason);

    // Pushes go to `sender` (which must outlive the gate or be closed first)
    // and REGISTER answers with `topic`.
    void open(PushSender &sender, std::string topic);
    void close(std::string reason);

    bool is_open() const noexcept { return sender_ != nullptr; }
    // While open: the APNs topic; empty while closed.
    const std::string &topic() const noexcept { return topic_; }
    // While closed: why; empty while open.
    const std::string &reason() const noexcept { return reason_; }

    void send(const Push &push, Done done) override;
    // Closed: the reason; open: the sender's (no working connection...).
    std::string unavailable_reason() const override;

private:
    EventLoop &loop_;
    PushSender *sender_ = nullptr;
    std::string topic_;
    std::string reason_;
};

} // namespace xaps
