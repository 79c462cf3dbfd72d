#include "worker-log.h"

#include "dovecot-cxx.h"
#include "xaps-event.h"

namespace xaps {

namespace {
struct event *xaps_event = nullptr;
} // namespace

void worker_log_init() {
    xaps_event = dovecot::create_event(nullptr, dovecot::LogPrefix::none);
}

void worker_log_deinit() {
    event_unref(&xaps_event);
}

struct event *worker_event() {
    return xaps_event;
}

void log_from_core(LogLevel level, std::string_view message) {
    dovecot::log_to_event(xaps_event, level, message);
}

} // namespace xaps
