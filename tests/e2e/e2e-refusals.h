// The check every end-to-end test makes of the mock APNs server at its end:
// a push the product sends wrong reaches no phone in the field, whatever the
// test then checks of it.
#pragma once

#include "mock-apns-server.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace xaps::test::e2e {

// Fails the test for every request the mock refused as APNs would, unless
// its reason is one of `expected` (refusals the test provoked on purpose).
inline void expect_no_refusals(const MockApnsServer &apns,
                               const std::vector<std::string> &expected = {}) {
    std::string unexpected;
    for (const MockApnsRequest &request : apns.refused_requests()) {
        if (std::find(expected.begin(), expected.end(), request.refused_reason) != expected.end()) {
            continue;
        }
        unexpected += std::to_string(request.refused_status) + " " + request.refused_reason +
                      " to " + request.method + " " + request.path;
        for (const auto &[name, value] : request.headers) {
            if (name.starts_with("apns-")) {
                unexpected += " " + name + "=" + value;
            }
        }
        unexpected += " body=" + request.body + "\n";
    }
    EXPECT_EQ(unexpected, "") << "the mock APNs refused what Apple would refuse";
}

} // namespace xaps::test::e2e
