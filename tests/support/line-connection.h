// A blocking stream socket for test clients: every wait is bounded by a
// timeout, so a server that hangs fails the test instead of hanging it.
#pragma once

#include "unique-fd.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace xaps::test {

using Milliseconds = std::chrono::milliseconds;
inline constexpr Milliseconds default_io_timeout{10000};

class LineConnection {
public:
    // Throws xaps::Error(unavailable) when no connection is made within the timeout.
    static LineConnection connect_tcp(const std::string &host, std::uint16_t port,
                                      Milliseconds timeout = default_io_timeout);
    static LineConnection connect_unix(const std::string &path,
                                       Milliseconds timeout = default_io_timeout);
    // A socket connected elsewhere, e.g. by a child process running as
    // another user, which passed it back.
    static LineConnection adopt(UniqueFd fd) { return LineConnection(std::move(fd)); }

    // Bounds every later read and write.
    void set_timeout(Milliseconds timeout) { timeout_ = timeout; }
    Milliseconds timeout() const { return timeout_; }

    void write_all(std::string_view data);
    // The next line without its "\n" (and "\r" before it). Throws
    // xaps::Error(unavailable) on timeout or when the peer closed first.
    std::string read_line();
    // The next line as it arrived, "\n" included and nothing stripped.
    std::string read_line_as_sent();
    std::string read_exact(std::size_t size);
    // True when the peer closed the connection (EOF or reset) within the
    // timeout, having sent nothing more. Data that arrives instead is kept.
    bool wait_for_close(Milliseconds timeout);
    int fd() const { return fd_.get(); }

private:
    explicit LineConnection(UniqueFd fd) : fd_(std::move(fd)) {}
    // Appends what arrives to buffer_; false on EOF. Throws on timeout or error.
    bool fill_buffer(std::chrono::steady_clock::time_point deadline);

    UniqueFd fd_;
    std::string buffer_;
    Milliseconds timeout_ = default_io_timeout;
};

} // namespace xaps::test
