// What the parts of the xaps mail plugin share at module level.
#pragma once

struct event;
struct module;

namespace xaps::plugin {

// The loaded module, for mail_user_is_plugin_loaded().
struct module *plugin_module() noexcept;

} // namespace xaps::plugin
