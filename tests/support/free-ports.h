// Loopback TCP ports that nothing listens on, for servers a test starts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace xaps::test {

// `count` distinct ports the kernel would hand out on 127.0.0.1 right now.
// Another process could still take one before the server binds it; on a test
// machine that is rare enough.
std::vector<std::uint16_t> find_free_tcp_ports(std::size_t count);

} // namespace xaps::test
