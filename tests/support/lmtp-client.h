// A blocking LMTP client (RFC 2033) for end-to-end tests: one transaction per
// deliver(), one final reply per recipient.
#pragma once

#include "line-connection.h"
#include "protocol-trace.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xaps::test {

struct SmtpReply {
    int code = 0;
    std::vector<std::string> lines; // every line of a multi-line reply, as sent

    bool positive() const { return code >= 200 && code < 400; }
    // The lines joined with " | ", for assertion messages.
    std::string text() const;
};

// A small RFC 5322 message with CRLF line endings, unique Message-ID and a Date.
std::string make_test_message(std::string_view from, std::string_view to, std::string_view subject,
                              std::string_view body);

class LmtpClient {
public:
    // Connects to 127.0.0.1:port, reads the greeting and sends LHLO.
    explicit LmtpClient(std::uint16_t port, Milliseconds timeout = default_io_timeout);
    // The same over the lmtp unix socket.
    explicit LmtpClient(const std::string &socket_path, Milliseconds timeout = default_io_timeout);
    ~LmtpClient();
    LmtpClient(const LmtpClient &) = delete;
    LmtpClient &operator=(const LmtpClient &) = delete;

    void set_trace(TraceFunction trace) { trace_ = std::move(trace); }

    // One reply per recipient: its RCPT reply if rejected, else its reply after DATA.
    // Throws xaps::Error when MAIL FROM or DATA itself is refused.
    std::vector<SmtpReply> deliver_to_each(std::string_view from,
                                           const std::vector<std::string> &rcpts,
                                           std::string_view message);
    SmtpReply deliver(std::string_view from, std::string_view rcpt, std::string_view message);

private:
    explicit LmtpClient(LineConnection connection);
    void start_session();
    void send_line(std::string_view line);
    SmtpReply read_reply();
    SmtpReply command(std::string_view line);

    LineConnection connection_;
    TraceFunction trace_;
};

} // namespace xaps::test
