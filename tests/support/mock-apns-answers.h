// Responders for the mock APNs server (MockApnsServer::set_responder) that
// the APNs client tests share.
#pragma once

#include "mock-apns-server.h"

#include <chrono>

namespace xaps::test {

// Answers every request 200, after `delay`: the requests stay in flight
// that long.
inline MockApnsServer::Responder answer_after(std::chrono::milliseconds delay) {
    return [delay](const MockApnsRequest &) {
        MockApnsResponse response;
        response.delay = delay;
        return response;
    };
}

} // namespace xaps::test
