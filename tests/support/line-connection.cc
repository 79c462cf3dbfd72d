#include "line-connection.h"

#include "xaps-error.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>

namespace xaps::test {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail_unavailable(const std::string &message) {
    throw Error(ErrorKind::unavailable, message);
}

std::string errno_text(int error) {
    return std::strerror(error);
}

int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<Milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

// Waits for `events` on fd; false on timeout.
bool wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd pfd{fd, events, 0};
        int ret = ::poll(&pfd, 1, remaining_ms(deadline));
        if (ret > 0) {
            return true;
        }
        if (ret == 0) {
            return false;
        }
        if (errno != EINTR) {
            fail_unavailable("poll: " + errno_text(errno));
        }
    }
}

// One non-blocking connect attempt; returns 0 or the errno that made it fail.
int try_connect(int fd, const sockaddr *address, socklen_t length, Clock::time_point deadline) {
    if (::connect(fd, address, length) == 0) {
        return 0;
    }
    if (errno != EINPROGRESS && errno != EAGAIN) {
        return errno;
    }
    if (!wait_for(fd, POLLOUT, deadline)) {
        return ETIMEDOUT;
    }
    int error = 0;
    socklen_t error_length = sizeof(error);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_length) < 0) {
        return errno;
    }
    return error;
}

// Retries refused connections (a server still starting) until the deadline.
UniqueFd connect_with_retry(int family, const sockaddr *address, socklen_t length,
                            const std::string &what, Milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    int last_error = 0;
    do {
        UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd) {
            fail_unavailable("socket: " + errno_text(errno));
        }
        last_error = try_connect(fd.get(), address, length, deadline);
        if (last_error == 0) {
            return fd;
        }
        if (last_error != ECONNREFUSED && last_error != ENOENT && last_error != EAGAIN) {
            break;
        }
        std::this_thread::sleep_for(Milliseconds(20));
    } while (Clock::now() < deadline);
    fail_unavailable("cannot connect to " + what + ": " + errno_text(last_error));
}

} // namespace

LineConnection LineConnection::connect_tcp(const std::string &host, std::uint16_t port,
                                           Milliseconds timeout) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
        throw Error(ErrorKind::invalid_input, "not an IPv4 address: " + host);
    }
    return LineConnection(connect_with_retry(AF_INET, reinterpret_cast<sockaddr *>(&address),
                                             sizeof(address), host + ":" + std::to_string(port),
                                             timeout));
}

LineConnection LineConnection::connect_unix(const std::string &path, Milliseconds timeout) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path)) {
        throw Error(ErrorKind::invalid_input, "unix socket path too long: " + path);
    }
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    return LineConnection(connect_with_retry(AF_UNIX, reinterpret_cast<sockaddr *>(&address),
                                             sizeof(address), path, timeout));
}

void LineConnection::write_all(std::string_view data) {
    auto deadline = Clock::now() + timeout_;
    while (!data.empty()) {
        ssize_t sent = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
        if (sent > 0) {
            data.remove_prefix(static_cast<std::size_t>(sent));
            continue;
        }
        if (sent < 0 && errno == EINTR) {
            continue;
        }
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_for(fd_.get(), POLLOUT, deadline)) {
                fail_unavailable("timed out writing to the server");
            }
            continue;
        }
        fail_unavailable("write: " + errno_text(errno));
    }
}

bool LineConnection::fill_buffer(Clock::time_point deadline) {
    for (;;) {
        char chunk[16384];
        ssize_t got = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
        if (got > 0) {
            buffer_.append(chunk, static_cast<std::size_t>(got));
            return true;
        }
        if (got == 0) {
            return false;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == ECONNRESET) {
            return false;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            fail_unavailable("read: " + errno_text(errno));
        }
        if (!wait_for(fd_.get(), POLLIN, deadline)) {
            fail_unavailable("timed out after " + std::to_string(timeout_.count()) +
                             " ms waiting for the server; got so far: '" + buffer_ + "'");
        }
    }
}

std::string LineConnection::read_line() {
    std::string line = read_line_as_sent();
    line.pop_back(); // the "\n"
    if (!line.empty() && line.back() == '\r') {
        line.pop_back();
    }
    return line;
}

std::string LineConnection::read_line_as_sent() {
    auto deadline = Clock::now() + timeout_;
    for (;;) {
        auto newline = buffer_.find('\n');
        if (newline != std::string::npos) {
            std::string line = buffer_.substr(0, newline + 1);
            buffer_.erase(0, newline + 1);
            return line;
        }
        if (!fill_buffer(deadline)) {
            fail_unavailable("the server closed the connection; unterminated data: '" + buffer_ +
                             "'");
        }
    }
}

std::string LineConnection::read_exact(std::size_t size) {
    auto deadline = Clock::now() + timeout_;
    while (buffer_.size() < size) {
        if (!fill_buffer(deadline)) {
            fail_unavailable("the server closed the connection in the middle of a literal");
        }
    }
    std::string data = buffer_.substr(0, size);
    buffer_.erase(0, size);
    return data;
}

bool LineConnection::wait_for_close(Milliseconds timeout) {
    if (!buffer_.empty()) {
        return false;
    }
    auto deadline = Clock::now() + timeout;
    try {
        return !fill_buffer(deadline);
    } catch (const Error &) {
        return false; // timed out: still open
    }
}

} // namespace xaps::test
