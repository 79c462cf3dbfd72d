// Every xaps_* setting as one row: name, type, default, limits, help, and the
// XapsSettings field it fills. The reader (read_xaps_settings), Dovecot 2.4's
// declarations (dovecot/dovecot-settings.cc) and the defaults documented in
// conf.d/ and README.md (checked by tests/unit/test-xaps-setting-table.cc) all
// come from this table: a setting is added, renamed or given a new default
// here and nowhere else. The names are a public contract.
#pragma once

#include "xaps-settings.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace xaps {

enum class SettingType {
    text,     // taken as written
    number,   // an unsigned decimal from minimum to maximum
    duration, // Dovecot's units: "250ms", "30s", "10min", "24h", "30d"
    size,     // bytes in Dovecot's units: "512k", "256M", "4G"
    words,    // a list separated by spaces or commas
    boolean,  // "yes" or "no"
};

// The XapsSettings field a row fills; its C++ type follows from the row's type.
using SettingField =
    std::variant<std::string XapsSettings::*, std::uint16_t XapsSettings::*,
                 unsigned XapsSettings::*, std::uint64_t XapsSettings::*,
                 std::optional<int> XapsSettings::*, std::chrono::seconds XapsSettings::*,
                 std::chrono::milliseconds XapsSettings::*,
                 std::vector<std::string> XapsSettings::*, bool XapsSettings::*>;

struct SettingRow {
    const char *name; // NUL-terminated: Dovecot 2.4 takes it as the key
    SettingType type;
    // As an admin writes it in 95-xaps.conf. Empty: unset, the field keeps its
    // empty value (no file, no apns-priority header, ...).
    const char *default_value;
    // number: the accepted range. duration: in milliseconds, after the value
    // is truncated to the field's unit. size: in bytes.
    std::uint64_t minimum;
    std::uint64_t maximum;
    const char *help; // one line, for the documentation
    SettingField field;
};

namespace setting_row {

// The builders let only a matching field into a row; a range the field cannot
// hold stops the build (a throw in a constant expression).

template <typename Field> struct number_value { using type = Field; };
template <> struct number_value<std::optional<int>> { using type = int; };

constexpr SettingRow text(const char *name, std::string XapsSettings::*field,
                          const char *default_value, const char *help) {
    return {name, SettingType::text, default_value, 0, 0, help, field};
}

template <typename Field>
constexpr SettingRow number(const char *name, Field XapsSettings::*field, const char *default_value,
                            std::uint64_t minimum, std::uint64_t maximum, const char *help) {
    using Value = typename number_value<Field>::type;
    if (minimum > maximum ||
        maximum > static_cast<std::uint64_t>(std::numeric_limits<Value>::max())) {
        throw "the range does not fit the field";
    }
    return {name, SettingType::number, default_value, minimum, maximum, help, field};
}

template <typename Duration>
constexpr SettingRow duration(const char *name, Duration XapsSettings::*field,
                              const char *default_value, std::uint64_t minimum_ms,
                              const char *help) {
    return {name,
            SettingType::duration,
            default_value,
            minimum_ms,
            std::numeric_limits<std::uint64_t>::max(),
            help,
            field};
}

constexpr SettingRow size(const char *name, std::uint64_t XapsSettings::*field,
                          const char *default_value, std::uint64_t minimum_bytes,
                          std::uint64_t maximum_bytes, const char *help) {
    if (minimum_bytes > maximum_bytes) {
        throw "the range is empty";
    }
    return {name, SettingType::size, default_value, minimum_bytes, maximum_bytes, help, field};
}

constexpr SettingRow words(const char *name, std::vector<std::string> XapsSettings::*field,
                           const char *default_value, const char *help) {
    return {name, SettingType::words, default_value, 0, 0, help, field};
}

constexpr SettingRow boolean(const char *name, bool XapsSettings::*field, const char *default_value,
                             const char *help) {
    return {name, SettingType::boolean, default_value, 0, 0, help, field};
}

} // namespace setting_row

// In the order of conf.d/95-xaps.conf's sections.
inline constexpr std::array xaps_setting_table = {
    setting_row::text("xaps_socket_path", &XapsSettings::socket_path, "xaps",
                      "worker socket, relative to base_dir unless absolute"),
    setting_row::text("xaps_admin_socket_path", &XapsSettings::admin_socket_path, "xaps-admin",
                      "worker's admin socket (doveadm xaps), relative to base_dir unless absolute"),
    setting_row::text("xaps_user_lookup", &XapsSettings::user_lookup, "",
                      "userdb field to use as push user name; unset: the Dovecot username"),
    setting_row::text("xaps_db_path", &XapsSettings::db_path, "/var/lib/dovecot-xaps",
                      "LMDB registration store directory"),
    // At least a map LMDB can start with; at most what a 64-bit address
    // space could hold several times over.
    setting_row::size("xaps_db_max_size", &XapsSettings::db_max_size, "16G", 1ULL << 20, 1ULL << 44,
                      "largest memory map of the store; never more than the address space "
                      "(service xaps { vsz_limit }) leaves"),
    setting_row::text("xaps_shared_store", &XapsSettings::shared_store, "",
                      "registration store shared by several backends: a PostgreSQL connection "
                      "string (libpq); unset: the LMDB store alone"),
    setting_row::duration("xaps_shared_store_timeout", &XapsSettings::shared_store_timeout, "5s",
                          100, "longest wait for the shared store before REGISTER answers NO"),

    setting_row::text("xaps_apns_host", &XapsSettings::apns_host, "api.push.apple.com",
                      "APNs host"),
    setting_row::number("xaps_apns_port", &XapsSettings::apns_port, "443", 1, 65535, "APNs port"),
    setting_row::text("xaps_apns_ca_file", &XapsSettings::apns_ca_file, "",
                      "trust anchors for APNs TLS; unset: the system store"),
    setting_row::text("xaps_apns_cert_file", &XapsSettings::apns_cert_file, "",
                      "PEM client certificate"),
    setting_row::text("xaps_apns_key_file", &XapsSettings::apns_key_file, "",
                      "PEM client key; unset: in xaps_apns_cert_file"),
    setting_row::text("xaps_apns_p12_file", &XapsSettings::apns_p12_file, "",
                      "PKCS#12 certificate and key instead of PEM"),
    setting_row::text("xaps_apns_p12_password", &XapsSettings::apns_p12_password, "",
                      "password of xaps_apns_p12_file"),
    setting_row::text("xaps_apns_token_key_file", &XapsSettings::apns_token_key_file, "",
                      "token auth: the .p8 signing key"),
    setting_row::text("xaps_apns_key_id", &XapsSettings::apns_key_id, "",
                      "token auth: the key's id"),
    setting_row::text("xaps_apns_team_id", &XapsSettings::apns_team_id, "",
                      "token auth: the team id"),
    setting_row::text("xaps_apns_topic", &XapsSettings::apns_topic, "",
                      "token auth: the apns-topic"),
    setting_row::text("xaps_apns_push_type", &XapsSettings::apns_push_type, "background",
                      "apns-push-type header"),
    setting_row::number("xaps_apns_priority", &XapsSettings::apns_priority, "", 1, 10,
                        "apns-priority header; unset: not sent"),
    setting_row::duration("xaps_apns_expiration", &XapsSettings::apns_expiration, "24h", 0,
                          "how long Apple keeps trying an offline phone"),
    setting_row::number("xaps_apns_connections", &XapsSettings::apns_connections, "1", 1, 64,
                        "HTTP/2 connections to APNs"),

    setting_row::duration("xaps_delay", &XapsSettings::delay, "30s", 0,
                          "delay for non-mail events (flags, expunge, rename), coalesced"),
    setting_row::duration("xaps_registration_ttl", &XapsSettings::registration_ttl, "30d", 1,
                          "a registration not renewed for this long expires"),
    setting_row::number("xaps_max_devices_per_user", &XapsSettings::max_devices_per_user, "16", 1,
                        1000, "devices per user; the least recently seen goes"),
    setting_row::words("xaps_subtopics", &XapsSettings::subtopics, "com.apple.mobilemail",
                       "accepted aps-subtopic values"),
    setting_row::boolean("xaps_push_mailbox_hashes", &XapsSettings::push_mailbox_hashes, "yes",
                         "name the changed mailboxes in pushes (MD5 of each name, seen by "
                         "Apple); no: INBOX-only pushes"),

    setting_row::text("xaps_apple_id", &XapsSettings::apple_id, "",
                      "legacy Apple-ID provisioning: the Apple ID"),
    setting_row::text("xaps_apple_password_hash", &XapsSettings::apple_password_hash, "",
                      "legacy Apple-ID provisioning: `doveadm xaps hash-password` output"),
    setting_row::text("xaps_caservice_url", &XapsSettings::caservice_url, "",
                      "legacy Apple-ID provisioning: service URL; unset: Apple's"),
    setting_row::text("xaps_caservice_vendor_key_file", &XapsSettings::caservice_vendor_key_file,
                      "", "legacy Apple-ID provisioning: vendor key"),
    setting_row::text("xaps_caservice_vendor_chain_file",
                      &XapsSettings::caservice_vendor_chain_file, "",
                      "legacy Apple-ID provisioning: vendor certificate chain"),
};

} // namespace xaps
