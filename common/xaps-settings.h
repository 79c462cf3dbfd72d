// The xaps_* settings as the plugin, doveadm and the worker use them, and
// their one reader. On Dovecot 2.3 the values come from plugin { }: the mail
// plugin looks them up per user, the worker from the global block; on 2.4
// from the declared settings. Each hands a lookup function to
// read_xaps_settings(). Names, defaults and limits are in
// xaps-setting-table.h.
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

// The fields hold no defaults of their own: read_xaps_settings() fills every
// one from the table (default_xaps_settings() for the defaults alone).
struct XapsSettings {
    std::string socket_path;       // mail listener: REGISTER and NOTIFY
    std::string admin_socket_path; // admin listener: LIST, PURGE, STATUS, TEST, IMPORT
    std::string user_lookup;
    std::string db_path;
    std::uint64_t db_max_size{}; // bytes
    std::string shared_store;    // PostgreSQL connection string; empty: LMDB alone
    std::chrono::milliseconds shared_store_timeout{};

    std::string apns_host;
    std::uint16_t apns_port{};
    std::string apns_ca_file;
    std::string apns_cert_file;
    std::string apns_key_file;
    std::string apns_p12_file;
    std::string apns_p12_password;
    std::string apns_token_key_file;
    std::string apns_key_id;
    std::string apns_team_id;
    std::string apns_topic;
    std::string apns_push_type;
    std::optional<int> apns_priority;
    std::chrono::seconds apns_expiration{};
    unsigned apns_connections{};

    std::chrono::milliseconds delay{};
    std::chrono::seconds registration_ttl{};
    unsigned max_devices_per_user{};
    std::vector<std::string> subtopics;
    bool push_mailbox_hashes{};

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

// Every setting the lookup does not give takes the table's default. Throws
// Error(config) naming the setting and what is wrong with its value.
XapsSettings read_xaps_settings(const SettingLookup &lookup);

// Every setting at its default.
XapsSettings default_xaps_settings();

// A socket path setting resolved against Dovecot's base_dir.
std::string resolve_socket_path(std::string_view path, std::string_view base_dir);

} // namespace xaps
