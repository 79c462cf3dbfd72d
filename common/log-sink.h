// How the Dovecot-free core logs: through a sink its owner hands it. The
// worker and doveadm route it to Dovecot's log (dovecot/xaps-event.h), tests
// record it.
#pragma once

#include <functional>
#include <string_view>

namespace xaps {

enum class LogLevel { debug, info, warning, error };
using LogSink = std::function<void(LogLevel, std::string_view)>;

} // namespace xaps
