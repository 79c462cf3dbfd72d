#include "push-gate.h"

#include "xaps-assert.h"

#include <utility>

namespace xaps {

PushGate::PushGate(EventLoop &loop, std::string reason) : loop_(loop), reason_(std::move(reason)) {
    XAPS_ASSERT(!reason_.empty());
}

void PushGate::open(PushSender &sender, std::string topic) {
    XAPS_ASSERT(!topic.empty());
    sender_ = &sender;
    topic_ = std::move(topic);
    reason_.clear();
}

void PushGate::close(std::string reason) {
    XAPS_ASSERT(!reason.empty());
    sender_ = nullptr;
    topic_.clear();
    reason_ = std::move(reason);
}

std::string PushGate::unavailable_reason() const {
    return sender_ != nullptr ? sender_->unavailable_reason() : reason_;
}

void PushGate::send(const Push &push, Done done) {
    if (sender_ != nullptr) {
        sender_->send(push, std::move(done));
        return;
    }
    // PushSender promises never to call back from within send().
    PushOutcome outcome;
    outcome.result = PushOutcome::Result::failed;
    outcome.reason = reason_;
    loop_.post([outcome = std::move(outcome), done = std::move(done)] { done(outcome); });
}

} // namespace xaps
