#include "lmtp-client.h"

#include "xaps-error.h"

#include <atomic>
#include <charconv>
#include <ctime>
#include <unistd.h>

namespace xaps::test {

namespace {

std::string rfc5322_date_now() {
    std::time_t now = std::time(nullptr);
    std::tm utc{};
    ::gmtime_r(&now, &utc);
    char text[64];
    std::strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S +0000", &utc);
    return text;
}

// CRLF line endings and SMTP dot-stuffing for the DATA phase.
std::string encode_data(std::string_view message) {
    std::string data;
    bool line_start = true;
    for (std::size_t i = 0; i < message.size(); i++) {
        char c = message[i];
        if (line_start && c == '.') {
            data += '.';
        }
        if (c == '\n' && (i == 0 || message[i - 1] != '\r')) {
            data += '\r';
        }
        data += c;
        line_start = c == '\n';
    }
    if (!data.ends_with("\r\n")) {
        data += "\r\n";
    }
    data += ".\r\n";
    return data;
}

} // namespace

std::string SmtpReply::text() const {
    std::string joined;
    for (const auto &line : lines) {
        if (!joined.empty()) {
            joined += " | ";
        }
        joined += line;
    }
    return joined;
}

std::string make_test_message(std::string_view from, std::string_view to, std::string_view subject,
                              std::string_view body) {
    static std::atomic<unsigned> counter{0};
    std::string message;
    message += "From: <" + std::string(from) + ">\r\n";
    message += "To: <" + std::string(to) + ">\r\n";
    message += "Subject: " + std::string(subject) + "\r\n";
    message += "Date: " + rfc5322_date_now() + "\r\n";
    message += "Message-ID: <xaps-test-" + std::to_string(::getpid()) + "-" +
               std::to_string(++counter) + "@example.com>\r\n";
    message += "MIME-Version: 1.0\r\n";
    message += "Content-Type: text/plain; charset=utf-8\r\n";
    message += "\r\n";
    message += body;
    if (!message.ends_with("\r\n")) {
        message += "\r\n";
    }
    return message;
}

LmtpClient::LmtpClient(std::uint16_t port, Milliseconds timeout)
    : LmtpClient(LineConnection::connect_tcp("127.0.0.1", port, timeout)) {
    connection_.set_timeout(timeout);
    start_session();
}

LmtpClient::LmtpClient(const std::string &socket_path, Milliseconds timeout)
    : LmtpClient(LineConnection::connect_unix(socket_path, timeout)) {
    connection_.set_timeout(timeout);
    start_session();
}

LmtpClient::LmtpClient(LineConnection connection) : connection_(std::move(connection)) {}

LmtpClient::~LmtpClient() {
    try {
        send_line("QUIT");
    } catch (...) {
        // The server may be gone already; nothing to tell anyone.
    }
}

void LmtpClient::start_session() {
    SmtpReply greeting = read_reply();
    if (greeting.code != 220) {
        throw Error(ErrorKind::unavailable, "unexpected LMTP greeting: " + greeting.text());
    }
    SmtpReply lhlo = command("LHLO xaps-test.example.com");
    if (lhlo.code != 250) {
        throw Error(ErrorKind::unavailable, "LHLO refused: " + lhlo.text());
    }
}

void LmtpClient::send_line(std::string_view line) {
    if (trace_) {
        trace_(TraceDirection::to_server, line);
    }
    connection_.write_all(std::string(line) + "\r\n");
}

SmtpReply LmtpClient::read_reply() {
    SmtpReply reply;
    for (;;) {
        std::string line = connection_.read_line();
        if (trace_) {
            trace_(TraceDirection::from_server, line);
        }
        int code = 0;
        auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), code);
        if (error != std::errc{} || end != line.data() + 3) {
            throw Error(ErrorKind::invalid_input, "not an SMTP reply line: " + line);
        }
        reply.code = code;
        bool more = line.size() > 3 && line[3] == '-';
        reply.lines.push_back(std::move(line));
        if (!more) {
            return reply;
        }
    }
}

SmtpReply LmtpClient::command(std::string_view line) {
    send_line(line);
    return read_reply();
}

std::vector<SmtpReply> LmtpClient::deliver_to_each(std::string_view from,
                                                   const std::vector<std::string> &rcpts,
                                                   std::string_view message) {
    SmtpReply mail = command("MAIL FROM:<" + std::string(from) + ">");
    if (mail.code != 250) {
        throw Error(ErrorKind::unavailable, "MAIL FROM refused: " + mail.text());
    }
    std::vector<SmtpReply> replies;
    std::vector<std::size_t> accepted;
    for (const auto &rcpt : rcpts) {
        replies.push_back(command("RCPT TO:<" + rcpt + ">"));
        if (replies.back().code == 250) {
            accepted.push_back(replies.size() - 1);
        }
    }
    if (accepted.empty()) {
        command("RSET");
        return replies;
    }
    SmtpReply data = command("DATA");
    if (data.code != 354) {
        throw Error(ErrorKind::unavailable, "DATA refused: " + data.text());
    }
    if (trace_) {
        trace_(TraceDirection::to_server,
               "<message, " + std::to_string(message.size()) + " bytes>\r\n.");
    }
    connection_.write_all(encode_data(message));
    for (std::size_t index : accepted) {
        replies[index] = read_reply();
    }
    return replies;
}

SmtpReply LmtpClient::deliver(std::string_view from, std::string_view rcpt,
                              std::string_view message) {
    return deliver_to_each(from, {std::string(rcpt)}, message).front();
}

} // namespace xaps::test
