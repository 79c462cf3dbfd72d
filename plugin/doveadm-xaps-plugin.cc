// The module doveadm loads from its module directory as
// lib95_doveadm_xaps_plugin.so: version symbol, init and deinit, which
// register the `doveadm xaps ...` commands.
#include "dovecot-cxx.h"
#include "doveadm-xaps-cmd.h"

// The symbols doveadm's module loader looks up; everything else is hidden.
#define XAPS_EXPORT __attribute__((visibility("default")))

extern "C" {

XAPS_EXPORT const char *doveadm_xaps_plugin_version = DOVECOT_ABI_VERSION;

XAPS_EXPORT void doveadm_xaps_plugin_init(struct module *) noexcept {
    using namespace xaps::doveadm;
    doveadm_cmd_register_ver2(&cmd_xaps_list);
    doveadm_cmd_register_ver2(&cmd_xaps_purge);
    doveadm_cmd_register_ver2(&cmd_xaps_status);
    doveadm_cmd_register_ver2(&cmd_xaps_test);
    doveadm_cmd_register_ver2(&cmd_xaps_import);
    doveadm_cmd_register_ver2(&cmd_xaps_migrate);
    doveadm_cmd_register_ver2(&cmd_xaps_hash_password);
    doveadm_cmd_register_ver2(&cmd_xaps_provision);
}

// doveadm forgets its commands itself (doveadm_cmds_deinit).
XAPS_EXPORT void doveadm_xaps_plugin_deinit(void) noexcept {}

} // extern "C"
