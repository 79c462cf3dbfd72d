#include "xaps-event.h"

#include "dovecot-cxx.h"

namespace xaps::dovecot {

namespace {
struct event_category xaps_event_category = {
    .parent = nullptr,
    .name = "xaps",
    .internal = nullptr,
};
} // namespace

struct event *create_event(struct event *parent, LogPrefix prefix) {
    struct event *event = event_create(parent);
    event_add_category(event, &xaps_event_category);
    if (prefix == LogPrefix::xaps) {
        event_set_append_log_prefix(event, "xaps: ");
    }
    return event;
}

} // namespace xaps::dovecot
