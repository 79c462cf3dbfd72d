// A blocking client of the xaps worker sockets that speaks the worker protocol
// from docs/worker-protocol.md in literal lines. It deliberately shares no code
// with the product's codec (common/worker-protocol.h, common/tab-escape.h):
// an independent reading of the document, so that a mistake made in the codec
// is not made again here and the two sides agree only when both follow the
// document.
#pragma once

#include "line-connection.h"
#include "registration.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xaps::test {

// One field escaped as the document says: \001 -> \0011, TAB -> \001t,
// CR -> \001r, LF -> \001n.
std::string wire_escape(std::string_view field);
std::string wire_unescape(std::string_view escaped);
// The escaped fields joined by TAB, ending in "\n".
std::string wire_line(const std::vector<std::string> &fields);
// A line without its "\n", split at TAB and unescaped.
std::vector<std::string> wire_fields(std::string_view line);

// One reply line: "<id> <status> [<field>...]".
struct WireReply {
    std::uint64_t id = 0;
    std::string status;              // "OK", "FAIL" or "ROW"
    std::vector<std::string> fields; // FAIL: {kind, message}
    std::string line;                // as received, "\n" included

    bool ok() const { return status == "OK"; }
    bool failed() const { return status == "FAIL"; }
    bool is_row() const { return status == "ROW"; }
};
// `line` as received, "\n" included. Throws xaps::Error(invalid_input) when
// the line is not a reply.
WireReply parse_wire_reply(std::string_view line);
// The replies' lines, one per line, for failure messages.
std::string describe(const std::vector<WireReply> &replies);

// The request fields that carry a registration, as the plugin (REGISTER) and
// doveadm (IMPORT) send them; REGISTER leaves the times to the worker.
std::vector<std::string> register_request(const Registration &registration);
std::vector<std::string> import_request(const Registration &registration);

class WorkerClient {
public:
    // Connects and exchanges the VERSION handshake; throws xaps::Error when the
    // worker does not answer it within the timeout or speaks another major version.
    explicit WorkerClient(const std::string &socket_path,
                          Milliseconds timeout = default_io_timeout);
    // The same over a connection made elsewhere (as another user, say).
    explicit WorkerClient(LineConnection connection, Milliseconds timeout = default_io_timeout);

    // The worker's VERSION line as it arrived, "\n" included.
    const std::string &server_version_line() const { return server_version_line_; }

    // Sends "<id> <field>..." with the next id and returns its replies: ROWs,
    // then the final OK or FAIL. E.g. request({"LIST", "alice"}).
    std::vector<WireReply> request(const std::vector<std::string> &fields);
    // LIST [user]; throws xaps::Error on FAIL or on a row that is not a registration.
    std::vector<Registration> list(const std::string &user = {});

    // Bytes exactly: `line` must carry its own "\n", and read_line() returns
    // the next line as it arrived, "\n" included (nothing is stripped, not
    // even a CR). Ids the caller writes itself should stay clear of the ones
    // request() uses: it counts up from 1.
    void send_line(std::string_view line) { connection_.write_all(line); }
    std::string read_line() { return connection_.read_line_as_sent(); }

private:
    LineConnection connection_;
    std::string server_version_line_;
    std::uint64_t last_id_ = 0;
};

} // namespace xaps::test
