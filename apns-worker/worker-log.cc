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
    const int length = static_cast<int>(message.size());
    switch (level) {
    case LogLevel::debug:
        e_debug(xaps_event, "%.*s", length, message.data());
        break;
    case LogLevel::info:
        e_info(xaps_event, "%.*s", length, message.data());
        break;
    case LogLevel::warning:
        e_warning(xaps_event, "%.*s", length, message.data());
        break;
    case LogLevel::error:
        e_error(xaps_event, "%.*s", length, message.data());
        break;
    }
}

} // namespace xaps
