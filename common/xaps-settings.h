// Every xaps_* setting, its default and its parsing, in one place. On Dovecot
// 2.3 the values come from plugin { }: the mail plugin looks them up per user,
// the worker from the global block; both hand a lookup function to
// read_xaps_settings(). Dovecot 2.4's typed settings will feed the same struct.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace xaps {

enum class CredentialKind { none, pem, pkcs12, token, apple_id };

struct XapsSettings {
    std::string socket_path = "xaps"; // relative to base_dir unless absolute
    std::string user_lookup;          // userdb field naming the push user
    std::string db_path = "/var/lib/dovecot-xaps";

    std::string apns_host = "api.push.apple.com";
    std::uint16_t apns_port = 443;
    std::string apns_ca_file; // empty: the system trust store
    std::string apns_cert_file;
    std::string apns_key_file;
    std::string apns_p12_file;
    std::string apns_p12_password;
    std::string apns_token_key_file;
    std::string apns_key_id;
    std::string apns_team_id;
    std::string apns_topic;
    std::string apns_push_type = "background";
    std::optional<int> apns_priority;
    std::chrono::seconds apns_expiration{std::chrono::hours(24)};
    unsigned apns_connections = 1;

    std::chrono::milliseconds delay{std::chrono::seconds(30)};
    std::chrono::seconds registration_ttl{std::chrono::hours(24 * 30)};
    unsigned max_devices_per_user = 16;
    std::vector<std::string> subtopics{"com.apple.mobilemail"};

    std::string apple_id;
    std::string apple_password_hash;
    std::string caservice_url;
    std::string caservice_vendor_key_file;
    std::string caservice_vendor_chain_file;

    // Which credential the admin configured, in order of preference.
    CredentialKind credential_kind() const;
};

// Returns the setting's value, or nullopt when it is not set. An empty value
// counts as not set, as in Dovecot.
using SettingLookup = std::function<std::optional<std::string>(std::string_view name)>;

// Throws Error(config) naming the setting and what is wrong with its value.
XapsSettings read_xaps_settings(const SettingLookup &lookup);

// "socket_path" resolved against Dovecot's base_dir.
std::string resolve_socket_path(const XapsSettings &settings, std::string_view base_dir);

} // namespace xaps
