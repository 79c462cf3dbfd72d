// The one "xaps" event category, shared by the mail plugin, the doveadm
// module and the worker, so that `log_debug = category=xaps` and stats
// filters see all of them alike.
#pragma once

#include "log-sink.h"

#include <string_view>

struct event;

namespace xaps::dovecot {

enum class LogPrefix {
    // Lines start with "xaps: ": in imap, lmtp and doveadm, where the
    // process's own name says nothing about us.
    xaps,
    // No prefix of our own: the worker's service name already gives "xaps: ".
    none,
};

// A child event of `parent` (nullptr: the process) in the "xaps" category.
// The caller unrefs it.
struct event *create_event(struct event *parent, LogPrefix prefix = LogPrefix::xaps);

// One reference to a Dovecot event, released when destroyed. Copies take a
// reference of their own (Dovecot's count, no allocation), so a callback can
// keep the event of the work it finishes.
class EventHandle {
public:
    explicit EventHandle(struct event *event) noexcept : event_(event) {}
    EventHandle(const EventHandle &other) noexcept;
    EventHandle(EventHandle &&other) noexcept;
    EventHandle &operator=(const EventHandle &) = delete;
    EventHandle &operator=(EventHandle &&) = delete;
    ~EventHandle();

    struct event *get() const noexcept {
        return event_;
    }
    // Hands the reference over to the caller.
    struct event *release() noexcept;

private:
    struct event *event_;
};

// A line from the core's LogSink, logged on `event` at the matching level.
void log_to_event(struct event *event, LogLevel level, std::string_view message);

} // namespace xaps::dovecot
