// The plugin's log event, shared by the mail module and the doveadm module
// (both link this file), so that their lines read alike.
#include "dovecot-cxx.h"
#include "xaps-plugin.h"

namespace xaps::plugin {

namespace {
struct event_category xaps_event_category = {
    .parent = nullptr,
    .name = "xaps",
    .internal = nullptr,
};
} // namespace

struct event *create_event(struct event *parent) {
    struct event *event = event_create(parent);
    event_add_category(event, &xaps_event_category);
    event_set_append_log_prefix(event, "xaps: ");
    return event;
}

} // namespace xaps::plugin
