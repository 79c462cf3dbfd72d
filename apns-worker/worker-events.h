// Dovecot events for the worker's units of work, so that admins can count and
// time them with Dovecot's stats (metric { } blocks, doveadm stats dump, the
// OpenMetrics exporter):
//   xaps_push_finished          one push, when Apple's answer is final
//       fields: result (delivered/device_gone/rejected/failed), status (HTTP,
//       0 without an answer), reason; duration is Dovecot's own field.
//   xaps_registration_finished  one REGISTER, when it is durable or refused
//       fields: user, result (ok/failed), error
// They are debug-level: logged only with log_debug, always seen by stats.
#pragma once

#include "push-sender.h"
#include "worker-protocol.h"

#include <functional>

namespace xaps {

// Wraps the sender the scheduler uses and emits xaps_push_finished.
class EventEmittingSender final : public PushSender {
public:
    explicit EventEmittingSender(PushSender &inner) : inner_(inner) {}
    void send(const Push &push, Done done) override;

private:
    PushSender &inner_;
};

// Returns `reply` unchanged for requests other than REGISTER; for REGISTER,
// a reply function that also emits xaps_registration_finished with its final
// answer.
std::function<void(protocol::Reply)>
observe_registration(const protocol::RequestLine &line, std::function<void(protocol::Reply)> reply);

} // namespace xaps
