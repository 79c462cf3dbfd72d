// Times as the worker's log and doveadm's output show them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace xaps {

// ISO 8601 in UTC to the second, e.g. "2025-03-01T12:00:00Z"; a fraction of a
// second is dropped. A time the C library cannot break down (beyond its
// years) comes back as the plain number of seconds.
std::string iso8601_utc(std::int64_t unix_seconds);
std::string iso8601_utc(std::chrono::system_clock::time_point time);

} // namespace xaps
