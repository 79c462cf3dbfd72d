// The one header through which Dovecot's C headers enter our C++.
//
// Dovecot's headers are C and assume a C compiler; a few constructs do not
// survive C++ (docs/design.md, "Dovecot's C headers in C++"). Every workaround, and every switch
// between Dovecot versions, lives here so that no other file needs an #if on
// Dovecot's version or includes a Dovecot header directly.
#pragma once

// Dovecot's macros use typeof, which strict ISO modes (-std=c++20) lack.
#if defined(__STRICT_ANSI__) && !defined(typeof)
#define typeof __typeof__
#endif

extern "C" {
#include "config.h" // must precede every other Dovecot header
#include "lib.h"

// hash-decl.h declares `const key_type _const_key`, which becomes
// `const const char *` for string keys (push-notification-drivers.h): an
// error in C++. The member only feeds C type checks that Dovecot disables
// under C++; dropping the qualifier keeps the union's layout.
#undef HASH_TABLE_UNION
#define HASH_TABLE_UNION(key_type, value_type)                                                     \
    {                                                                                              \
        struct hash_table *_table;                                                                 \
        key_type _key;                                                                             \
        key_type *_keyp;                                                                           \
        key_type _const_key;                                                                       \
        value_type _value;                                                                         \
        value_type *_valuep;                                                                       \
    }

#include "array.h"
#include "str.h"
#include "ioloop.h"
#include "istream.h"
#include "ostream.h"
#include "net.h"
#include "connection.h"
#include "module-dir.h"
#include "restrict-access.h"
#include "settings-parser.h"
#if DOVECOT_PREREQ(2, 4, 0)
#include "settings.h" // settings_get(): typed settings
#endif
#include "master-service.h"
#include "master-service-settings.h"
#include "mail-user.h"
#include "mail-storage.h"
#include "mail-storage-hooks.h"

#include "push-notification-drivers.h"
// push-notification-events.h has a struct member named `delete`.
#define delete delete_
#include "push-notification-events.h"
#undef delete
#include "push-notification-txn-msg.h"
#include "push-notification-txn-mbox.h"
#include "push-notification-event-message-common.h"
#include "push-notification-event-messagenew.h"
#include "push-notification-event-messageappend.h"
#include "push-notification-event-flagsset.h"
#include "push-notification-event-flagsclear.h"

// Declarations only: the imap process defines these symbols. Files that call
// imap-only functions must reference them weakly (xaps-imap-command.cc) so
// that the same module loads in lmtp.
#include "imap-common.h"
#include "imap-commands.h"
#include "imap-arg.h"
#include "imap-quote.h"
#include "imap-utf7.h"

// Include order matters: doveadm.h before doveadm-cmd.h.
#include "doveadm.h"
#include "doveadm-cmd.h"
#include "doveadm-mail.h"
#include "doveadm-print.h"
#include "doveadm-settings.h"
#include "askpass.h" // doveadm xaps hash-password
}

#include "dovecot-settings.h"

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

// ---------------------------------------------------------------------------
// Version switches: Dovecot 2.3 (Debian 12) and 2.4 (Debian 13). The xaps_*
// settings' declaration and the worker's reading of them are in
// dovecot-settings.cc; everything else that differs is here.
#if !DOVECOT_PREREQ(2, 3, 0) || DOVECOT_PREREQ(2, 5, 0)
#error "dovecot-xaps supports Dovecot 2.3 and 2.4"
#endif

namespace xaps::dovecot {

// The xaps_* settings as this mail user sees them. 2.3: the user's
// plugin { } keys. 2.4: the declared settings, for the user's event.
inline SettingLookup user_setting_lookup(struct mail_user *user) {
#if DOVECOT_PREREQ(2, 4, 0)
    return event_setting_lookup(user->event);
#else
    return [user](std::string_view name) -> std::optional<std::string> {
        const char *value = mail_user_plugin_getenv(user, std::string(name).c_str());
        return value == nullptr ? std::nullopt : std::optional<std::string>(value);
    };
#endif
}

// The xaps_* settings as doveadm sees them (only in doveadm: 2.3 calls
// doveadm's own doveadm_plugin_getenv()).
inline SettingLookup doveadm_setting_lookup() {
#if DOVECOT_PREREQ(2, 4, 0)
    return event_setting_lookup(master_service_get_event(master_service));
#else
    return [](std::string_view name) -> std::optional<std::string> {
        const char *value = doveadm_plugin_getenv(std::string(name).c_str());
        return value == nullptr ? std::nullopt : std::optional<std::string>(value);
    };
#endif
}

// Whether the user's configuration runs the push_notification driver named
// `driver`. 2.3: push_notification_driver, push_notification_driver2, ... up
// to the first unset one, as push_notification reads them; a file read later
// that sets one of them replaces ours silently. 2.4: drivers are named
// filters that coexist, and the package's include declares ours: true.
inline bool push_driver_configured(struct mail_user *user, std::string_view driver) {
#if DOVECOT_PREREQ(2, 4, 0)
    (void)user;
    (void)driver;
    return true;
#else
    std::string key = "push_notification_driver";
    for (unsigned number = 2;; number++) {
        const char *value = mail_user_plugin_getenv(user, key.c_str());
        if (value == nullptr || *value == '\0') {
            return false;
        }
        const std::string_view name = std::string_view(value).substr(0, std::strcspn(value, ":"));
        if (name == driver) {
            return true;
        }
        key = "push_notification_driver" + std::to_string(number);
    }
#endif
}

// A push_notification driver's init in the shape each version calls it:
// `init` gets the user, the pool for its context, and the error out-parameter.
// 2.3 adds the driver's key=value config (xaps has none: everything is in the
// xaps_* settings); 2.4 adds the name of the push_notification filter.
using PushDriverInit = int (*)(struct mail_user *user, pool_t pool, void **context_r,
                               const char **error_r) noexcept;

#if DOVECOT_PREREQ(2, 4, 0)
template <PushDriverInit init>
int push_driver_init(struct mail_user *user, pool_t pool, const char * /*filter_name*/,
                     void **context_r, const char **error_r) noexcept {
    return init(user, pool, context_r, error_r);
}
#else
template <PushDriverInit init>
int push_driver_init(struct push_notification_driver_config * /*config*/, struct mail_user *user,
                     pool_t pool, void **context_r, const char **error_r) noexcept {
    return init(user, pool, context_r, error_r);
}
#endif

// Subscribes a push_notification driver transaction to one event. 2.4 logs
// the event's processing through log_event.
inline void push_event_init(struct push_notification_driver_txn *dtxn, const char *event_name,
                            void *config, struct event *log_event) {
#if DOVECOT_PREREQ(2, 4, 0)
    push_notification_event_init(dtxn, event_name, config, log_event);
#else
    (void)log_event;
    push_notification_event_init(dtxn, event_name, config);
#endif
}

// A doveadm command option as DOVEADM_CMD_PARAM() (a C compound literal, no
// use in C++) would fill it: 2.4 added `key`, the word that names a key=value
// argument, set to the option's name.
inline struct doveadm_cmd_param doveadm_param(char short_opt, const char *name,
                                              doveadm_cmd_param_t type,
                                              doveadm_cmd_param_flag_t flags) {
    struct doveadm_cmd_param param {};
    param.short_opt = short_opt;
    param.name = name;
#if DOVECOT_PREREQ(2, 4, 0)
    param.key = name;
#endif
    param.type = type;
    param.flags = flags;
    return param;
}

} // namespace xaps::dovecot
