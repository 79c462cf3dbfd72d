#include "duration.h"

#include "xaps-error.h"

#include <array>
#include <charconv>
#include <cstdint>
#include <string>

namespace xaps {

namespace {

struct Unit {
    std::string_view name;
    std::int64_t milliseconds;
};

constexpr std::int64_t second = 1000;
constexpr std::array<Unit, 22> units{{
    {"ms", 1},
    {"msec", 1},
    {"msecs", 1},
    {"s", second},
    {"sec", second},
    {"secs", second},
    {"second", second},
    {"seconds", second},
    {"m", 60 * second},
    {"min", 60 * second},
    {"mins", 60 * second},
    {"minute", 60 * second},
    {"minutes", 60 * second},
    {"h", 3600 * second},
    {"hour", 3600 * second},
    {"hours", 3600 * second},
    {"d", 86400 * second},
    {"day", 86400 * second},
    {"days", 86400 * second},
    {"w", 7 * 86400 * second},
    {"week", 7 * 86400 * second},
    {"weeks", 7 * 86400 * second},
}};

std::string_view trim(std::string_view text) {
    while (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
    }
    while (!text.empty() && text.back() == ' ') {
        text.remove_suffix(1);
    }
    return text;
}

[[noreturn]] void invalid(std::string_view text) {
    throw Error(ErrorKind::config, "invalid duration '" + std::string(text.substr(0, 64)) +
                                       "' (use e.g. 30s, 10min, 24h, 30d)");
}

} // namespace

std::chrono::milliseconds parse_duration(std::string_view text) {
    std::string_view trimmed = trim(text);
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(trimmed.data(), trimmed.data() + trimmed.size(), value);
    if (trimmed.empty() || ec != std::errc{} || value < 0) {
        invalid(text);
    }
    std::string_view unit_name = trim(std::string_view(ptr, trimmed.data() + trimmed.size() - ptr));
    std::int64_t multiplier = 0;
    if (unit_name.empty()) {
        multiplier = second;
    }
    for (const Unit &unit : units) {
        if (unit.name == unit_name) {
            multiplier = unit.milliseconds;
        }
    }
    if (multiplier == 0 || value > INT64_MAX / multiplier) {
        invalid(text);
    }
    return std::chrono::milliseconds(value * multiplier);
}

} // namespace xaps
