#include "xaps-settings.h"

#include "duration.h"
#include "xaps-error.h"

#include <charconv>

namespace xaps {

namespace {

class SettingReader {
public:
    explicit SettingReader(const SettingLookup &lookup) : lookup_(lookup) {}

    void string(std::string_view name, std::string &out) const {
        if (auto value = lookup_(name); value && !value->empty()) {
            out = *value;
        }
    }

    template <typename Unsigned>
    void number(std::string_view name, Unsigned &out, Unsigned minimum, Unsigned maximum) const {
        auto value = lookup_(name);
        if (!value || value->empty()) {
            return;
        }
        std::uint64_t parsed = 0;
        const char *end = value->data() + value->size();
        auto [ptr, ec] = std::from_chars(value->data(), end, parsed);
        if (ec != std::errc{} || ptr != end || parsed < minimum || parsed > maximum) {
            throw Error(ErrorKind::config, std::string(name) + ": '" + value->substr(0, 64) +
                                               "' is not a number from " +
                                               std::to_string(minimum) + " to " +
                                               std::to_string(maximum));
        }
        out = static_cast<Unsigned>(parsed);
    }

    template <typename Duration> void duration(std::string_view name, Duration &out) const {
        auto value = lookup_(name);
        if (!value || value->empty()) {
            return;
        }
        try {
            out = std::chrono::duration_cast<Duration>(parse_duration(*value));
        } catch (const Error &e) {
            throw Error(ErrorKind::config, std::string(name) + ": " + e.what());
        }
    }

    void words(std::string_view name, std::vector<std::string> &out) const {
        auto value = lookup_(name);
        if (!value || value->empty()) {
            return;
        }
        out.clear();
        std::size_t start = 0;
        while (start < value->size()) {
            std::size_t end = value->find_first_of(" ,", start);
            if (end == std::string::npos) {
                end = value->size();
            }
            if (end > start) {
                out.push_back(value->substr(start, end - start));
            }
            start = end + 1;
        }
    }

private:
    const SettingLookup &lookup_;
};

} // namespace

CredentialKind XapsSettings::credential_kind() const {
    if (!apns_cert_file.empty()) {
        return CredentialKind::pem;
    }
    if (!apns_p12_file.empty()) {
        return CredentialKind::pkcs12;
    }
    if (!apns_token_key_file.empty()) {
        return CredentialKind::token;
    }
    if (!apple_id.empty()) {
        return CredentialKind::apple_id;
    }
    return CredentialKind::none;
}

XapsSettings read_xaps_settings(const SettingLookup &lookup) {
    XapsSettings settings;
    SettingReader read(lookup);
    read.string("xaps_socket_path", settings.socket_path);
    read.string("xaps_user_lookup", settings.user_lookup);
    read.string("xaps_db_path", settings.db_path);

    read.string("xaps_apns_host", settings.apns_host);
    read.number<std::uint16_t>("xaps_apns_port", settings.apns_port, 1, 65535);
    read.string("xaps_apns_ca_file", settings.apns_ca_file);
    read.string("xaps_apns_cert_file", settings.apns_cert_file);
    read.string("xaps_apns_key_file", settings.apns_key_file);
    read.string("xaps_apns_p12_file", settings.apns_p12_file);
    read.string("xaps_apns_p12_password", settings.apns_p12_password);
    read.string("xaps_apns_token_key_file", settings.apns_token_key_file);
    read.string("xaps_apns_key_id", settings.apns_key_id);
    read.string("xaps_apns_team_id", settings.apns_team_id);
    read.string("xaps_apns_topic", settings.apns_topic);
    read.string("xaps_apns_push_type", settings.apns_push_type);
    unsigned priority = 0;
    read.number<unsigned>("xaps_apns_priority", priority, 1, 10);
    if (priority != 0) {
        settings.apns_priority = static_cast<int>(priority);
    }
    read.duration("xaps_apns_expiration", settings.apns_expiration);
    read.number<unsigned>("xaps_apns_connections", settings.apns_connections, 1, 64);

    read.duration("xaps_delay", settings.delay);
    read.duration("xaps_registration_ttl", settings.registration_ttl);
    read.number<unsigned>("xaps_max_devices_per_user", settings.max_devices_per_user, 1, 1000);
    read.words("xaps_subtopics", settings.subtopics);

    read.string("xaps_apple_id", settings.apple_id);
    read.string("xaps_apple_password_hash", settings.apple_password_hash);
    read.string("xaps_caservice_url", settings.caservice_url);
    read.string("xaps_caservice_vendor_key_file", settings.caservice_vendor_key_file);
    read.string("xaps_caservice_vendor_chain_file", settings.caservice_vendor_chain_file);

    if (!settings.apns_cert_file.empty() && settings.apns_key_file.empty()) {
        settings.apns_key_file = settings.apns_cert_file; // a PEM file holding both
    }
    if (settings.registration_ttl.count() == 0) {
        throw Error(ErrorKind::config, "xaps_registration_ttl: must be more than 0");
    }
    return settings;
}

std::string resolve_socket_path(const XapsSettings &settings, std::string_view base_dir) {
    if (!settings.socket_path.empty() && settings.socket_path.front() == '/') {
        return settings.socket_path;
    }
    return std::string(base_dir) + "/" + settings.socket_path;
}

} // namespace xaps
