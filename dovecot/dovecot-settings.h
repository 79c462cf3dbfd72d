// Where Dovecot keeps the xaps_* settings, for each Dovecot version: the one
// settings file (with dovecot-cxx.h, the only place that switches on the
// version). Include through dovecot-cxx.h.
//
// Dovecot 2.3: untyped `plugin { }` keys. The mail plugin and doveadm ask
// Dovecot per key (dovecot-cxx.h); the worker reads the global plugin { }
// block itself (service_setting_lookup).
// Dovecot 2.4: declared settings (xaps_setting_parser_info), which the config
// process learns from the settings module libxaps_settings.so and every
// process reads with settings_get(). They are declared from the table in
// common/xaps-setting-table.h, as strings under the same names:
// common/xaps-settings.cc stays the one parser of their values, with the same
// units and errors on both versions.
#pragma once

#include "xaps-settings.h"

struct event;
struct master_service;
struct setting_parser_info;

namespace xaps::dovecot {

// The settings as the service sees them. Reads Dovecot's configuration: call
// it while still root. Throws Error(config).
SettingLookup service_setting_lookup(struct master_service *service);

// Dovecot 2.4: the xaps settings as seen from `event` (a mail user's, the
// service's); the lookup keeps them until it is destroyed. Throws
// Error(config) when Dovecot cannot provide them. Asking for a name that is
// not declared throws Error(internal): the declaration list is incomplete.
SettingLookup event_setting_lookup(struct event *event);

// Dovecot 2.4: the declaration of every xaps_* setting, which the settings
// module hands to the config process (defined on 2.4 only).
extern const struct setting_parser_info xaps_setting_parser_info;

} // namespace xaps::dovecot
