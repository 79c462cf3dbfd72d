// The module Dovecot loads as `xaps` (lib95_xaps_plugin.so): version and
// dependency symbols, init and deinit.
#include "xaps-plugin.h"

#include "dovecot-cxx.h"
#include "xaps-driver.h"
#include "xaps-imap-command.h"
#include "xaps-worker-client.h"

namespace xaps::plugin {

namespace {

struct module *loaded_module = nullptr;

} // namespace

struct module *plugin_module() noexcept {
    return loaded_module;
}

} // namespace xaps::plugin

// The symbols Dovecot's module loader looks up; everything else is hidden.
#define XAPS_EXPORT __attribute__((visibility("default")))

extern "C" {

XAPS_EXPORT const char *xaps_plugin_version = DOVECOT_ABI_VERSION;
// Loaded first, so that the driver can register with it.
XAPS_EXPORT const char *xaps_plugin_dependencies[] = {"push_notification", nullptr};

XAPS_EXPORT void xaps_plugin_init(struct module *module) noexcept {
    xaps::plugin::loaded_module = module;
    xaps::plugin::driver_register();
    xaps::plugin::imap_command_init();
}

XAPS_EXPORT void xaps_plugin_deinit(void) noexcept {
    xaps::plugin::imap_command_deinit();
    xaps::plugin::driver_unregister();
    xaps::plugin::worker_clients_shutdown();
    xaps::plugin::loaded_module = nullptr;
}

} // extern "C"
