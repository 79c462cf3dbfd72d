#include "worker-log.h"

#include "dovecot-cxx.h"

namespace xaps {

namespace {
struct event_category event_category_xaps = {nullptr, "xaps", nullptr};
struct event *xaps_event = nullptr;
} // namespace

void worker_log_init() {
    xaps_event = event_create(nullptr);
    event_add_category(xaps_event, &event_category_xaps);
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
