#include "free-ports.h"

#include "unique-fd.h"
#include "xaps-error.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>

namespace xaps::test {

std::vector<std::uint16_t> find_free_tcp_ports(std::size_t count) {
    // All sockets stay bound until every port is known, so the ports differ.
    std::vector<UniqueFd> sockets;
    std::vector<std::uint16_t> ports;
    for (std::size_t i = 0; i < count; i++) {
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof(address);
        if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr *>(&address), length) < 0 ||
            ::getsockname(fd.get(), reinterpret_cast<sockaddr *>(&address), &length) < 0) {
            throw Error(ErrorKind::internal,
                        std::string("cannot find a free port: ") + std::strerror(errno));
        }
        ports.push_back(ntohs(address.sin_port));
        sockets.push_back(std::move(fd));
    }
    return ports;
}

} // namespace xaps::test
