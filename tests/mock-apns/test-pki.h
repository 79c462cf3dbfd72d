// The test PKI (tests/pki/, built by meson; XAPS_TEST_PKI_DIR) as the tests,
// the demo and the benchmarks use it: one place for its file names.
#pragma once

#include "mock-apns-server.h"

#include <fstream>
#include <string>
#include <string_view>

#ifndef XAPS_TEST_PKI_DIR
#error "meson must define XAPS_TEST_PKI_DIR (test_pki_dep)"
#endif

namespace xaps::test {

inline std::string test_pki_file(std::string_view name) {
    return std::string(XAPS_TEST_PKI_DIR) + "/" + std::string(name);
}

// The mock set up as Apple's server is: its certificate from the test CA,
// and a client certificate from the test CA required.
inline MockApnsConfig apple_like_mock_config() {
    MockApnsConfig config;
    config.cert_file = test_pki_file("server.pem");
    config.key_file = test_pki_file("server.key");
    config.client_ca_file = test_pki_file("ca.pem");
    return config;
}

// The UID of the test client certificate's subject: the APNs topic.
inline std::string test_pki_topic() {
    std::ifstream in(test_pki_file("topic.txt"));
    std::string topic;
    std::getline(in, topic);
    while (!topic.empty() && (topic.back() == '\r' || topic.back() == ' ')) {
        topic.pop_back();
    }
    return topic;
}

} // namespace xaps::test
