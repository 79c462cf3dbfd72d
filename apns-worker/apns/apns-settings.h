// What the APNs client needs to know: where Apple is, the credentials, the
// push headers, and the few tuning knobs (defaults suit production; tests
// shorten the delays). What an admin configures comes from the xaps_apns_*
// settings through ApnsSettings::from(), and has no default here.
#pragma once

#include "log-sink.h"
#include "xaps-settings.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace xaps {

struct ApnsSettings {
    // The settings' values for the APNs client. Only the credential
    // XapsSettings::credential_kind() chose is passed on, so that the kind
    // the worker reports is the one in use when several are configured.
    static ApnsSettings from(const XapsSettings &settings);

    std::string host;
    std::uint16_t port{};
    std::string ca_file; // empty: the system trust store
    std::string cert_file;
    std::string key_file; // empty: the key is in cert_file
    // PKCS#12 instead of cert_file/key_file (certificate, key and chain in one file).
    std::string p12_file;
    std::string p12_password;
    // Token auth instead of a client certificate: the .p8 key Apple issued,
    // its key id and the team id. Used when no certificate is set above.
    std::string token_key_file;
    std::string key_id;
    std::string team_id;
    // The apns-topic with token auth (a certificate names its own topic).
    std::string topic;
    // A new provider token after this long; Apple's bounds are 20 to 60 minutes.
    std::chrono::seconds token_renew_after{std::chrono::minutes{50}};
    std::string push_type;
    std::optional<int> priority; // apns-priority is sent only when set
    std::chrono::seconds expiration{};
    unsigned connections{};

    // Pushes waiting for a connection; beyond this, send() fails them. As many
    // as the scheduler tracks devices (PushSchedulerSettings::max_pending): a
    // burst that comes in while the connections are still being set up waits
    // instead of failing (10,000 failed part of a 20,000-device burst in
    // bench-push). A waiting push takes a few hundred bytes.
    std::size_t max_queued = 100000;
    // A push not answered this long after send() is failed.
    std::chrono::milliseconds give_up_after{std::chrono::minutes{5}};
    // 429/500/503 answers: retries of one push, and the backoff between them.
    unsigned max_retries = 5;
    std::chrono::milliseconds retry_initial_delay{1000};
    std::chrono::milliseconds retry_max_delay{std::chrono::seconds{60}};
    // A push whose connection died before it was answered is resent at most this often.
    unsigned max_resends = 3;
    // Backoff between failed connection attempts.
    std::chrono::milliseconds reconnect_initial_delay{1000};
    std::chrono::milliseconds reconnect_max_delay{std::chrono::seconds{60}};
    // TCP connect + TLS handshake + the server's first SETTINGS.
    std::chrono::milliseconds connect_timeout{std::chrono::seconds{10}};
    // An idle connection is PINGed; no answer within ping_timeout closes it.
    std::chrono::milliseconds ping_interval{std::chrono::seconds{60}};
    std::chrono::milliseconds ping_timeout{std::chrono::seconds{15}};
    // A request unanswered this long is cancelled and sent again (max_resends).
    std::chrono::milliseconds request_timeout{std::chrono::seconds{30}};
    // Our own cap on streams per connection, below whatever the server allows.
    std::uint32_t max_streams_per_connection = 1000;
};

} // namespace xaps
