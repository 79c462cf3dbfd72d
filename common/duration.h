// Durations in Dovecot's setting syntax ("30s", "10 min", "30d", "250ms").
// The core cannot call Dovecot's settings_get_time() (no Dovecot headers
// here), so this accepts the same units.
#pragma once

#include <chrono>
#include <string_view>

namespace xaps {

// Throws Error(config) for an empty, negative, unit-less-but-fractional or
// unknown-unit value. A bare number means seconds, as in Dovecot.
std::chrono::milliseconds parse_duration(std::string_view text);

} // namespace xaps
