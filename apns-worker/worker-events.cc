#include "worker-events.h"

#include "dovecot-cxx.h"
#include "xaps-event.h"
#include "worker-log.h"

#include <string>
#include <utility>

namespace xaps {

namespace {

const char *result_name(PushOutcome::Result result) {
    switch (result) {
    case PushOutcome::Result::delivered:
        return "delivered";
    case PushOutcome::Result::device_gone:
        return "device_gone";
    case PushOutcome::Result::rejected:
        return "rejected";
    case PushOutcome::Result::failed:
        break;
    }
    return "failed";
}

dovecot::EventHandle create_event(const char *name) {
    // Created when the work starts, so Dovecot's duration field times it.
    dovecot::EventHandle event(event_create(worker_event()));
    event_set_name(event.get(), name);
    return event;
}

} // namespace

void EventEmittingSender::send(const Push &push, Done done) {
    dovecot::EventHandle event = create_event("xaps_push_finished");
    inner_.send(push,
                [event = std::move(event), done = std::move(done)](const PushOutcome &outcome) {
                    event_add_str(event.get(), "result", result_name(outcome.result));
                    event_add_int(event.get(), "status", outcome.http_status);
                    event_add_str(event.get(), "reason", outcome.reason.c_str());
                    e_debug(event.get(), "push finished: %s %d %s", result_name(outcome.result),
                            outcome.http_status, outcome.reason.c_str());
                    done(outcome);
                });
}

std::function<void(protocol::Reply)>
observe_registration(const protocol::RequestLine &line,
                     std::function<void(protocol::Reply)> reply) {
    const auto *request = std::get_if<protocol::Register>(&line.request);
    if (request == nullptr) {
        return reply;
    }
    dovecot::EventHandle event = create_event("xaps_registration_finished");
    event_add_str(event.get(), "user", request->registration.user.c_str());
    return [event, reply = std::move(reply)](protocol::Reply answer) {
        if (answer.status != protocol::ReplyStatus::row) {
            bool ok = answer.status == protocol::ReplyStatus::ok;
            event_add_str(event.get(), "result", ok ? "ok" : "failed");
            if (!ok && answer.fields.size() >= 2) {
                event_add_str(event.get(), "error", answer.fields[1].c_str());
            }
            e_debug(event.get(), "registration finished: %s", ok ? "ok" : "failed");
        }
        reply(std::move(answer));
    };
}

} // namespace xaps
