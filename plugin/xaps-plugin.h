// What the parts of the xaps mail plugin share at module level.
#pragma once

struct event;
struct module;

namespace xaps::plugin {

// The loaded module, for mail_user_is_plugin_loaded().
struct module *plugin_module() noexcept;

// A child event of `parent` (nullptr: the process) in the "xaps" category
// whose log lines start with "xaps: ". The caller unrefs it.
struct event *create_event(struct event *parent);

} // namespace xaps::plugin
