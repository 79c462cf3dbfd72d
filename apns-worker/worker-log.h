// The worker's log event (category "xaps"), so its debug lines follow
// Dovecot's own switches (log_debug = category=xaps) and its lines can be
// filtered like any other Dovecot component's. The service name already gives
// every line the "xaps: " prefix.
#pragma once

#include "log-sink.h"

#include <string_view>

struct event;

namespace xaps {

void worker_log_init();
void worker_log_deinit();
struct event *worker_event();

// The LogSink the core (APNs client, scheduler) logs through.
void log_from_core(LogLevel level, std::string_view message);

} // namespace xaps
