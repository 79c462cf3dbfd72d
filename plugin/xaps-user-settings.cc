#include "xaps-user-settings.h"

#include "dovecot-cxx.h"

#include <optional>
#include <string_view>

namespace xaps::plugin {

namespace {

// The value of "name=value" in userdb's fields, if present.
std::optional<std::string> userdb_field(struct mail_user *user, std::string_view name) {
    if (user->userdb_fields == nullptr) {
        return std::nullopt;
    }
    for (const char *const *field = user->userdb_fields; *field != nullptr; field++) {
        std::string_view entry(*field);
        if (entry.size() > name.size() && entry.starts_with(name) && entry[name.size()] == '=') {
            return std::string(entry.substr(name.size() + 1));
        }
    }
    return std::nullopt;
}

} // namespace

UserSettings read_user_settings(struct mail_user *user) {
    UserSettings settings;
    settings.xaps = read_xaps_settings(dovecot::user_setting_lookup(user));
    settings.socket_path = resolve_socket_path(settings.xaps.socket_path, user->set->base_dir);

    settings.push_user = user->username;
    if (!settings.xaps.user_lookup.empty()) {
        auto value = userdb_field(user, settings.xaps.user_lookup);
        if (value && !value->empty()) {
            settings.push_user = *value;
        } else {
            settings.user_lookup_missing = true;
        }
    }
    return settings;
}

} // namespace xaps::plugin
