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

EventHandle::EventHandle(const EventHandle &other) noexcept
    : event_(other.event_ == nullptr ? nullptr : event_ref(other.event_)) {}

EventHandle::EventHandle(EventHandle &&other) noexcept : event_(other.release()) {}

EventHandle::~EventHandle() {
    if (event_ != nullptr) {
        event_unref(&event_);
    }
}

struct event *EventHandle::release() noexcept {
    struct event *event = event_;
    event_ = nullptr;
    return event;
}

void log_to_event(struct event *event, LogLevel level, std::string_view message) {
    const int length = static_cast<int>(message.size());
    switch (level) {
    case LogLevel::debug:
        e_debug(event, "%.*s", length, message.data());
        break;
    case LogLevel::info:
        e_info(event, "%.*s", length, message.data());
        break;
    case LogLevel::warning:
        e_warning(event, "%.*s", length, message.data());
        break;
    case LogLevel::error:
        e_error(event, "%.*s", length, message.data());
        break;
    }
}

} // namespace xaps::dovecot
