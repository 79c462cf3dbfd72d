// The settings module Dovecot 2.4's config process loads from
// <moduledir>/settings as libxaps_settings.so (module `xaps_settings`): it
// declares the xaps_* settings, without which Dovecot refuses them. Built on
// Dovecot 2.4 only (plugin/meson.build); Dovecot 2.3 has no such modules.
#include "dovecot-cxx.h"

#define XAPS_EXPORT __attribute__((visibility("default")))

extern "C" {

XAPS_EXPORT const char *xaps_settings_version = DOVECOT_ABI_VERSION;
XAPS_EXPORT const struct setting_parser_info *xaps_settings_set_infos[] = {
    &xaps::dovecot::xaps_setting_parser_info,
    nullptr,
};

} // extern "C"
