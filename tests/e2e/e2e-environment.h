// What an end-to-end run is made of, as this build tree produced it: the
// plugin, the worker and the test PKI, located through compile-time
// definitions (meson passes their build paths), plus the mock APNs server
// set up the way Apple's is (TLS, client certificate required).
#pragma once

#include "dovecot-instance.h"
#include "mock-apns-server.h"
#include "test-pki.h"

#include <string>

#if !defined(XAPS_PLUGIN_PATH) || !defined(XAPS_WORKER_PATH) || !defined(XAPS_TEST_PKI_DIR)
#error "meson must define XAPS_PLUGIN_PATH, XAPS_WORKER_PATH and XAPS_TEST_PKI_DIR"
#endif

namespace xaps::test::e2e {

inline constexpr const char *plugin_path = XAPS_PLUGIN_PATH;
inline constexpr const char *worker_path = XAPS_WORKER_PATH;
inline constexpr const char *pki_dir = XAPS_TEST_PKI_DIR;

// What an iPhone sends: iOS's account UUID (upper case) and a 32-byte device token in hex.
inline constexpr const char *iphone_account_id = "0715A26B-CA09-4730-A419-793000CA982E";
inline constexpr const char *iphone_device_token =
    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";

inline MockApnsConfig mock_apns_config() {
    return apple_like_mock_config();
}

// Plugin, worker and credentials for the mock listening on apns_port.
inline DovecotOptions dovecot_options(std::uint16_t apns_port) {
    DovecotOptions options;
    options.plugin_path = plugin_path;
    options.worker_path = worker_path;
    options.pki_dir = pki_dir;
    options.apns_port = apns_port;
    return options;
}

// The UID of the test client certificate's subject: the APNs topic.
inline std::string apns_topic() {
    return test_pki_topic();
}

// The registration command as iOS Mail sends it.
inline std::string xapplepushservice_command() {
    return std::string("XAPPLEPUSHSERVICE \"aps-version\" \"2\" \"aps-account-id\" \"") +
           iphone_account_id + "\" \"aps-device-token\" \"" + iphone_device_token +
           "\" \"aps-subtopic\" \"com.apple.mobilemail\" \"mailboxes\" (\"INBOX\" \"Sent "
           "Messages\")";
}

} // namespace xaps::test::e2e
