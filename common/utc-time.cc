#include "utc-time.h"

#include <ctime>

namespace xaps {

std::string iso8601_utc(std::int64_t unix_seconds) {
    const auto seconds = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    char text[32];
    if (::gmtime_r(&seconds, &tm) == nullptr ||
        std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return std::to_string(unix_seconds);
    }
    return text;
}

std::string iso8601_utc(std::chrono::system_clock::time_point time) {
    return iso8601_utc(static_cast<std::int64_t>(std::chrono::system_clock::to_time_t(time)));
}

} // namespace xaps
