#include "worker-client.h"

#include "xaps-error.h"

#include <charconv>

namespace xaps::test {

namespace {

constexpr char escape_byte = '\001';
const std::string handshake_line = "VERSION\txaps\t1\t1\n";

template <typename Number> Number number_field(const std::string &field, const char *what) {
    Number value{};
    const char *end = field.data() + field.size();
    auto [stop, error] = std::from_chars(field.data(), end, value);
    if (field.empty() || error != std::errc() || stop != end) {
        throw Error(ErrorKind::invalid_input, std::string(what) + " is not a number: " + field);
    }
    return value;
}

std::vector<std::string> registration_request(const char *command, const Registration &registration,
                                              bool with_times) {
    std::vector<std::string> fields{command,
                                    registration.user,
                                    registration.account_id,
                                    registration.device_token,
                                    registration.subtopic,
                                    std::to_string(registration.aps_version)};
    if (with_times) {
        fields.push_back(std::to_string(registration.registered_at));
        fields.push_back(std::to_string(registration.last_seen));
    }
    fields.insert(fields.end(), registration.mailboxes.begin(), registration.mailboxes.end());
    return fields;
}

// A ROW of LIST: user account_id device_token subtopic aps_version
// registered_at last_seen [mailbox...].
Registration registration_of_row(const WireReply &row) {
    if (row.fields.size() < 7) {
        throw Error(ErrorKind::invalid_input, "not a registration row: " + row.line);
    }
    Registration registration;
    registration.user = row.fields[0];
    registration.account_id = row.fields[1];
    registration.device_token = row.fields[2];
    registration.subtopic = row.fields[3];
    registration.aps_version = number_field<unsigned>(row.fields[4], "aps_version");
    registration.registered_at = number_field<std::int64_t>(row.fields[5], "registered_at");
    registration.last_seen = number_field<std::int64_t>(row.fields[6], "last_seen");
    registration.mailboxes.assign(row.fields.begin() + 7, row.fields.end());
    return registration;
}

ErrorKind error_kind_of(const std::string &name) {
    if (name == "invalid") {
        return ErrorKind::invalid_input;
    }
    if (name == "unavailable") {
        return ErrorKind::unavailable;
    }
    if (name == "notfound") {
        return ErrorKind::not_found;
    }
    if (name == "config") {
        return ErrorKind::config;
    }
    if (name == "forbidden") {
        return ErrorKind::forbidden;
    }
    return ErrorKind::internal;
}

} // namespace

std::string wire_escape(std::string_view field) {
    std::string escaped;
    escaped.reserve(field.size());
    for (char c : field) {
        switch (c) {
        case escape_byte:
            escaped += "\0011";
            break;
        case '\t':
            escaped += "\001t";
            break;
        case '\r':
            escaped += "\001r";
            break;
        case '\n':
            escaped += "\001n";
            break;
        default:
            escaped += c;
        }
    }
    return escaped;
}

std::string wire_unescape(std::string_view escaped) {
    std::string field;
    field.reserve(escaped.size());
    for (std::size_t i = 0; i < escaped.size(); i++) {
        if (escaped[i] != escape_byte || i + 1 == escaped.size()) {
            field += escaped[i];
            continue;
        }
        switch (escaped[++i]) {
        case '1':
            field += escape_byte;
            break;
        case 't':
            field += '\t';
            break;
        case 'r':
            field += '\r';
            break;
        case 'n':
            field += '\n';
            break;
        default:
            throw Error(ErrorKind::invalid_input,
                        "escape the protocol document does not name: " + std::string(escaped));
        }
    }
    return field;
}

std::string wire_line(const std::vector<std::string> &fields) {
    std::string line;
    for (std::size_t i = 0; i < fields.size(); i++) {
        line += (i == 0 ? "" : "\t") + wire_escape(fields[i]);
    }
    return line + "\n";
}

std::vector<std::string> wire_fields(std::string_view line) {
    std::vector<std::string> fields;
    for (;;) {
        const std::size_t tab = line.find('\t');
        fields.push_back(wire_unescape(line.substr(0, tab)));
        if (tab == std::string_view::npos) {
            return fields;
        }
        line.remove_prefix(tab + 1);
    }
}

WireReply parse_wire_reply(std::string_view line) {
    if (line.empty() || line.back() != '\n') {
        throw Error(ErrorKind::invalid_input, "not a whole line: " + std::string(line));
    }
    std::vector<std::string> fields = wire_fields(line.substr(0, line.size() - 1));
    if (fields.size() < 2 || (fields[1] != "OK" && fields[1] != "FAIL" && fields[1] != "ROW")) {
        throw Error(ErrorKind::invalid_input, "not a reply: " + std::string(line));
    }
    WireReply reply;
    reply.id = number_field<std::uint64_t>(fields[0], "reply id");
    reply.status = fields[1];
    reply.fields.assign(fields.begin() + 2, fields.end());
    reply.line = std::string(line);
    if (reply.failed() && reply.fields.size() != 2) {
        throw Error(ErrorKind::invalid_input, "FAIL without kind and message: " + reply.line);
    }
    return reply;
}

std::string describe(const std::vector<WireReply> &replies) {
    std::string text;
    for (const WireReply &reply : replies) {
        text += reply.line;
    }
    return text;
}

std::vector<std::string> register_request(const Registration &registration) {
    return registration_request("REGISTER", registration, false);
}

std::vector<std::string> import_request(const Registration &registration) {
    return registration_request("IMPORT", registration, true);
}

WorkerClient::WorkerClient(const std::string &socket_path, Milliseconds timeout)
    : WorkerClient(LineConnection::connect_unix(socket_path, timeout), timeout) {}

WorkerClient::WorkerClient(LineConnection connection, Milliseconds timeout)
    : connection_(std::move(connection)) {
    connection_.set_timeout(timeout);
    connection_.write_all(handshake_line);
    server_version_line_ = read_line();
    const std::vector<std::string> version = wire_fields(
        std::string_view(server_version_line_).substr(0, server_version_line_.size() - 1));
    // Another minor version is the worker's business; another major is not ours.
    if (version.size() != 4 || version[0] != "VERSION" || version[1] != "xaps" ||
        version[2] != "1") {
        throw Error(ErrorKind::invalid_input,
                    "unexpected handshake from the worker: " + server_version_line_);
    }
}

std::vector<WireReply> WorkerClient::request(const std::vector<std::string> &fields) {
    const std::uint64_t id = ++last_id_;
    std::vector<std::string> line{std::to_string(id)};
    line.insert(line.end(), fields.begin(), fields.end());
    connection_.write_all(wire_line(line));
    std::vector<WireReply> replies;
    for (;;) {
        WireReply reply = parse_wire_reply(read_line());
        if (reply.id != id) {
            throw Error(ErrorKind::invalid_input, "reply for request " + std::to_string(reply.id) +
                                                      ", expected " + std::to_string(id) + ": " +
                                                      reply.line);
        }
        const bool done = !reply.is_row();
        replies.push_back(std::move(reply));
        if (done) {
            return replies;
        }
    }
}

std::vector<Registration> WorkerClient::list(const std::string &user) {
    std::vector<std::string> fields{"LIST"};
    if (!user.empty()) {
        fields.push_back(user);
    }
    const std::vector<WireReply> replies = request(fields);
    const WireReply &last = replies.back();
    if (last.failed()) {
        throw Error(error_kind_of(last.fields[0]), last.fields[1]);
    }
    std::vector<Registration> registrations;
    for (std::size_t i = 0; i + 1 < replies.size(); i++) {
        registrations.push_back(registration_of_row(replies[i]));
    }
    return registrations;
}

} // namespace xaps::test
