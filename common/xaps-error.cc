#include "xaps-error.h"

#include <array>
#include <exception>
#include <utility>

namespace xaps {

namespace {
constexpr std::array<std::pair<ErrorKind, std::string_view>, 6> kind_names{{
    {ErrorKind::invalid_input, "invalid"},
    {ErrorKind::unavailable, "unavailable"},
    {ErrorKind::not_found, "notfound"},
    {ErrorKind::config, "config"},
    {ErrorKind::forbidden, "forbidden"},
    {ErrorKind::internal, "internal"},
}};
} // namespace

std::string_view error_kind_name(ErrorKind kind) noexcept {
    for (const auto &[k, name] : kind_names) {
        if (k == kind) {
            return name;
        }
    }
    return "internal";
}

ErrorKind error_kind_from_name(std::string_view name) noexcept {
    for (const auto &[k, n] : kind_names) {
        if (n == name) {
            return k;
        }
    }
    return ErrorKind::internal;
}

Error current_exception_as_error() noexcept {
    try {
        throw;
    } catch (const Error &error) {
        return error;
    } catch (const std::exception &error) {
        return Error(ErrorKind::internal, error.what());
    } catch (...) {
        return Error(ErrorKind::internal, "unknown error");
    }
}

} // namespace xaps
