// The one header through which Dovecot's C headers enter our C++.
//
// Dovecot's headers are C and assume a C compiler; a few constructs do not
// survive C++ (see DOVECOT-NOTES.md). Every workaround, and every switch
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
#include "master-service.h"
#include "master-service-settings.h"
#include "mail-user.h"
#include "mail-storage.h"

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

// ---------------------------------------------------------------------------
// Version switches. Dovecot 2.3 is what we build and test against (Debian 12).
// Dovecot 2.4 removed plugin { } settings (typed settings instead), changed the
// push_notification driver init and event init signatures and moved doveadm's
// headers; each difference gets a compat function here when 2.4 is supported.
#if DOVECOT_PREREQ(2, 4, 0)
#error "dovecot-xaps supports Dovecot 2.3 only so far: add the 2.4 switches in dovecot-cxx.h"
#endif

namespace xaps::dovecot {

// A plugin { } setting of the user, or nullptr when unset. On 2.4 this
// becomes a typed settings lookup under the same names.
inline const char *user_setting(struct mail_user *user, const char *name) {
    return mail_user_plugin_getenv(user, name);
}

// Subscribes a push_notification driver transaction to one event.
inline void push_event_init(struct push_notification_driver_txn *dtxn, const char *event_name,
                            void *config) {
    push_notification_event_init(dtxn, event_name, config);
}

} // namespace xaps::dovecot
