// The xaps settings as one mail user sees them. Every xaps_* value the plugin
// uses is read here, from Dovecot's per-user settings, and parsed by the
// shared reader in common/xaps-settings.h (names, defaults and units: the
// table in common/xaps-setting-table.h).
#pragma once

#include "xaps-settings.h"

#include <string>

struct mail_user;

namespace xaps::plugin {

struct UserSettings {
    XapsSettings xaps;
    std::string socket_path; // the worker socket, absolute
    // The name registrations and notifications carry: the Dovecot username, or
    // the userdb field named by xaps_user_lookup.
    std::string push_user;
    // The userdb field xaps_user_lookup names is missing for this user (the
    // username is used instead).
    bool user_lookup_missing = false;

    // Whether an APNs credential is configured: without one the worker cannot
    // push, so the IMAP capability is not offered.
    bool has_credential() const { return xaps.credential_kind() != CredentialKind::none; }
};

// Throws Error(config) when a setting has a value that does not parse.
UserSettings read_user_settings(struct mail_user *user);

} // namespace xaps::plugin
