// The XAPPLEPUSHSERVICE request: parsing and validation of its arguments.
//
// Plain C++ with no Dovecot headers, so that every rule is unit tested and the
// parser can be fuzzed. The imap adapter (xaps-imap-command.cc) turns
// Dovecot's imap_arg array into RequestArgs and supplies the modified UTF-7
// decoder; this file decides what is acceptable.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace xaps::plugin {

// One IMAP argument as the client sent it.
struct RequestArg {
    enum class Kind {
        string, // atom, quoted string or literal
        list,   // parenthesized list
        nil,    // NIL, or anything else that is neither a string nor a list
    };
    Kind kind = Kind::string;
    std::string text;              // Kind::string
    std::vector<RequestArg> items; // Kind::list

    static RequestArg string(std::string text) { return {Kind::string, std::move(text), {}}; }
    static RequestArg list(std::vector<RequestArg> items) {
        return {Kind::list, {}, std::move(items)};
    }
    static RequestArg nil() { return {Kind::nil, {}, {}}; }
};

struct RequestMailbox {
    std::string as_sent; // modified UTF-7, echoed back to the client
    std::string utf8;    // the name push_notification events carry; what is registered

    bool operator==(const RequestMailbox &) const = default;
};

struct ApsRequest {
    unsigned aps_version = 2; // 1: INBOX only, 2: the listed mailboxes
    std::string account_id;
    std::string device_token; // lower-case hex
    std::string subtopic;
    // Without duplicates, in the client's order. Version 1: INBOX.
    std::vector<RequestMailbox> mailboxes;

    bool operator==(const ApsRequest &) const = default;
};

// How the command must be refused: BAD for malformed syntax, NO for
// well-formed arguments we do not accept.
enum class Rejection { no, bad };

struct RequestError {
    Rejection rejection = Rejection::no;
    std::string message; // for the tagged reply: no client data, no CR/LF

    bool operator==(const RequestError &) const = default;
};

// Converts a modified UTF-7 mailbox name to UTF-8; nullopt when the name is
// not valid modified UTF-7.
using MailboxNameDecoder = std::function<std::optional<std::string>(const std::string &)>;

struct RequestPolicy {
    std::vector<std::string> subtopics;     // accepted aps-subtopic values
    MailboxNameDecoder decode_mailbox_name; // empty: names are taken as they are
};

using ParsedRequest = std::variant<ApsRequest, RequestError>;

// The arguments after the command name. Keys are case-insensitive and may come
// in any order; unknown keys are ignored whatever their value.
ParsedRequest parse_aps_request(std::span<const RequestArg> args, const RequestPolicy &policy);

} // namespace xaps::plugin
