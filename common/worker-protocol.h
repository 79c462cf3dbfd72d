// The worker protocol: what the plugin and doveadm say to xaps-worker over its
// unix socket. Line based, tab separated and tab escaped like Dovecot's own IPC
// (see tab-escape.h), opened by Dovecot's connection handshake
// "VERSION\txaps\t<major>\t<minor>" from both sides. docs/worker-protocol.md
// describes it for humans; this file is the codec both sides use.
//
// Request:  <id> TAB <COMMAND> [TAB <arg>]...
// Replies:  <id> TAB OK [TAB <field>]...          the request is done
//           <id> TAB FAIL TAB <kind> TAB <message> the request failed
//           <id> TAB ROW [TAB <field>]...         zero or more, before OK (LIST, STATUS, TEST)
// The id is chosen by the client (a positive decimal number); replies carry it
// so a client may pipeline requests and the worker may answer out of order.
#pragma once

#include "registration.h"
#include "xaps-error.h"

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace xaps::protocol {

inline constexpr const char *service_name = "xaps";
// Minor 1 split the commands between two listeners (PeerRole). Mail peers
// speak as in 1.0, so plugins loaded before an upgrade keep working.
// Minor 2 added HELLO, which a mail peer sends only to a worker that
// announced minor 2 or later; peers that never send it are served as before.
inline constexpr unsigned major_version = 1;
inline constexpr unsigned minor_version = 2;
// The first minor version whose worker understands HELLO.
inline constexpr unsigned hello_minor_version = 2;
// Bounds a HELLO's service name: Dovecot's service names are short words.
inline constexpr std::size_t max_service_name_length = 64;
// Bounds every line either side accepts (a REGISTER with max_mailboxes
// maximal names fits).
inline constexpr std::size_t max_line_length = 1536 * 1024;

// REGISTER user account_id device_token subtopic aps_version [mailbox]...
// -> OK <aps-topic>. Durable in the store before the OK is sent.
struct Register {
    Registration registration; // registered_at / last_seen are set by the worker
};
// NOTIFY user mailbox event [event]... -> OK
struct Notify {
    std::string user;
    std::string mailbox;             // UTF-8
    std::vector<std::string> events; // push_notification event names, e.g. MessageNew
};
// LIST [user] -> ROW <registration fields>... then OK <count>
struct List {
    std::string user; // empty: every user
};
enum class PurgeScope { user, token, all };
// PURGE user <name> | PURGE token <hex> | PURGE all -> OK <count removed>
struct Purge {
    PurgeScope scope = PurgeScope::all;
    std::string value;
};
// STATUS -> ROW <key> <value>... then OK
struct Status {};
// TEST user -> ROW <account_id> <device_token> <http status> <reason>... then OK <count>
struct Test {
    std::string user;
};
// IMPORT user account_id device_token subtopic aps_version registered_at last_seen [mailbox]...
// -> OK imported | OK exists. Keeps the given times (migration from xapsd).
struct Import {
    Registration registration;
};

// HELLO service process_limit -> OK. A mail process says which Dovecot
// service it runs in and that service's process_limit: each such process
// holds at most one connection to the worker, so the worker can tell when
// the limits add up to more than its client_limit. The service name is 1 to
// max_service_name_length letters, digits, '-', '_' or '.'.
struct Hello {
    std::string service;
    unsigned process_limit = 0;
};

// Which way MIGRATE copies: from the standalone LMDB store at xaps_db_path
// into the shared store, or back.
enum class MigrationDirection { to_shared, to_local };
// MIGRATE to-shared | MIGRATE to-local -> ROW <copied> <existing>...
// then OK <copied> <existing>. Copies every unexpired registration,
// keeping its times, unless the target has its key already; a ROW with the
// running totals follows each page but the last, so the client's silence
// timeout bounds one page, not the whole copy. Served only by a worker with
// xaps_shared_store set.
struct Migrate {
    MigrationDirection direction = MigrationDirection::to_shared;
};

using Request = std::variant<Register, Notify, List, Purge, Status, Test, Import, Hello, Migrate>;

// Which listener a peer came in on decides what it may ask, so that the
// socket's file mode is the whole access policy: mail processes (group
// dovecot) reach the mail listener, only root the admin listener.
enum class PeerRole {
    mail,  // REGISTER, NOTIFY, HELLO
    admin, // LIST, PURGE, STATUS, TEST, IMPORT, MIGRATE
};
PeerRole role_serving(const Request &request) noexcept;
// The request's command word, e.g. "REGISTER".
const char *command_name(const Request &request) noexcept;

struct RequestLine {
    std::uint64_t id = 0;
    Request request;
};

// A whole line, "\n" included.
std::string encode_request(std::uint64_t id, const Request &request);
// Fields as split from one line. Throws Error(invalid_input) with a message
// fit for a FAIL reply.
RequestLine decode_request(std::span<const std::string> fields);
// The id of a line that may not decode, so that its FAIL can still be matched; 0 if none.
std::uint64_t request_id_of(std::span<const std::string> fields) noexcept;

enum class ReplyStatus { ok, fail, row };

struct Reply {
    std::uint64_t id = 0;
    ReplyStatus status = ReplyStatus::ok;
    std::vector<std::string> fields; // FAIL: {kind name, message}

    static Reply ok(std::uint64_t id, std::vector<std::string> fields = {});
    static Reply row(std::uint64_t id, std::vector<std::string> fields);
    static Reply fail(std::uint64_t id, ErrorKind kind, std::string message);
    static Reply fail(std::uint64_t id, const Error &error);
    // For a FAIL reply: the error it carries.
    Error error() const;
};

std::string encode_reply(const Reply &reply);
// Throws Error(invalid_input) when the line is not a reply.
Reply decode_reply(std::span<const std::string> fields);

// The fields of a LIST row / IMPORT request after the command name:
// user account_id device_token subtopic aps_version registered_at last_seen [mailbox]...
std::vector<std::string> registration_to_fields(const Registration &registration);
Registration registration_from_fields(std::span<const std::string> fields);

} // namespace xaps::protocol
