#include "pipelined-worker-client.h"

#include "tab-escape.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace xaps::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Counts one reply line: "<id> TAB OK ...", "<id> TAB FAIL ...", or a ROW.
void count_reply(std::string_view line, PipelinedWorkerClient::Outcome &outcome) {
    const std::size_t tab = line.find('\t');
    const std::string_view status =
        tab == std::string_view::npos ? std::string_view{} : line.substr(tab + 1, 4);
    if (status.starts_with("OK")) {
        ++outcome.ok;
    } else if (status.starts_with("FAIL")) {
        if (outcome.failed++ == 0) {
            outcome.first_failure = line;
        }
    }
}

} // namespace

PipelinedWorkerClient::PipelinedWorkerClient(const std::string &socket_path)
    : connection_(test::LineConnection::connect_unix(socket_path)) {
    const std::vector<std::string> hello{"VERSION", protocol::service_name,
                                         std::to_string(protocol::major_version),
                                         std::to_string(protocol::minor_version)};
    connection_.write_all(join_line(hello));
    const std::vector<std::string> version = split_line(connection_.read_line());
    if (version.size() != 4 || version[0] != "VERSION" || version[1] != protocol::service_name) {
        throw Error(ErrorKind::invalid_input, "unexpected handshake from the worker");
    }
}

PipelinedWorkerClient::Outcome PipelinedWorkerClient::exchange(std::string_view requests,
                                                               std::size_t count,
                                                               test::Milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const int fd = connection_.fd();
    Outcome outcome;
    std::size_t written = 0;
    std::array<char, 65536> buffer{};
    while (outcome.ok + outcome.failed < count) {
        const auto left = std::chrono::duration_cast<test::Milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            throw Error(ErrorKind::unavailable,
                        "the worker answered " + std::to_string(outcome.ok + outcome.failed) +
                            " of " + std::to_string(count) + " requests in time");
        }
        pollfd pfd{fd, static_cast<short>(POLLIN | (written < requests.size() ? POLLOUT : 0)), 0};
        if (::poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
            throw Error(ErrorKind::unavailable, std::string("poll: ") + std::strerror(errno));
        }
        if ((pfd.revents & POLLOUT) != 0) {
            const ssize_t sent = ::send(fd, requests.data() + written, requests.size() - written,
                                        MSG_NOSIGNAL | MSG_DONTWAIT);
            if (sent > 0) {
                written += static_cast<std::size_t>(sent);
            } else if (sent < 0 && errno != EAGAIN && errno != EINTR) {
                throw Error(ErrorKind::unavailable, std::string("send: ") + std::strerror(errno));
            }
        }
        if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
            if (got == 0) {
                throw Error(ErrorKind::unavailable, "the worker closed the connection");
            }
            if (got < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    continue;
                }
                throw Error(ErrorKind::unavailable, std::string("recv: ") + std::strerror(errno));
            }
            unread_.append(buffer.data(), static_cast<std::size_t>(got));
            std::size_t start = 0;
            for (std::size_t end; (end = unread_.find('\n', start)) != std::string::npos;
                 start = end + 1) {
                count_reply(std::string_view(unread_).substr(start, end - start), outcome);
            }
            unread_.erase(0, start);
        }
    }
    return outcome;
}

} // namespace xaps::bench
