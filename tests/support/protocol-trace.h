// A hook through which the test clients show every line they exchange
// (xaps-demo prints them; tests leave it empty).
#pragma once

#include <functional>
#include <string_view>

namespace xaps::test {

enum class TraceDirection { to_server, from_server };
using TraceFunction = std::function<void(TraceDirection, std::string_view line)>;

} // namespace xaps::test
