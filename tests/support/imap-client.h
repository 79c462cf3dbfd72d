// A blocking IMAP client for end-to-end tests: sends commands, collects every
// untagged line up to the tagged completion, and can send raw bytes (literals,
// junk) to exercise the server's parser.
#pragma once

#include "line-connection.h"
#include "protocol-trace.h"

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace xaps::test {

struct ImapResponse {
    std::string tag;
    std::vector<std::string> untagged; // "* ..." and "+ ..." lines, literals inlined
    std::string tagged;                // the completion line, tag included

    // "OK", "NO" or "BAD": the word after the tag.
    std::string status() const;
    bool ok() const { return status() == "OK"; }
    // untagged lines followed by the tagged line, as the server sent them.
    std::vector<std::string> lines() const;
};

// An IMAP quoted string: "text" with \ and " escaped.
std::string imap_quote(std::string_view text);
// The capability names in "* CAPABILITY a b" or in a "[CAPABILITY a b]" response code.
std::set<std::string> parse_capabilities(std::string_view line);

class ImapClient {
public:
    // Connects to 127.0.0.1:port and reads the greeting.
    explicit ImapClient(std::uint16_t port, Milliseconds timeout = default_io_timeout);

    const std::string &greeting() const { return greeting_; }
    void set_timeout(Milliseconds timeout) { connection_.set_timeout(timeout); }
    void set_trace(TraceFunction trace) { trace_ = std::move(trace); }

    ImapResponse login(std::string_view user, std::string_view password);
    // Sends "<new tag> <text>" and reads through its tagged completion.
    ImapResponse command(std::string_view text);
    ImapResponse command_with_tag(std::string_view tag, std::string_view text);
    // CAPABILITY, parsed.
    std::set<std::string> capabilities();

    // Sends bytes as they are (no tag, no CRLF added).
    void send_raw(std::string_view bytes);
    // One response line (literals inlined), e.g. a "+ OK" continuation after a literal.
    std::string read_line();
    // Reads until the completion of `tag`, for commands sent with send_raw().
    ImapResponse read_response(std::string_view tag);
    // True when the server closes the connection within the timeout.
    bool wait_for_close(Milliseconds timeout) { return connection_.wait_for_close(timeout); }

private:
    std::string next_tag();

    LineConnection connection_;
    std::string greeting_;
    TraceFunction trace_;
    unsigned tag_counter_ = 0;
};

} // namespace xaps::test
