#include "worker-protocol.h"

#include "tab-escape.h"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <string_view>

namespace xaps::protocol {

namespace {

[[noreturn]] void fail(const std::string &message) {
    throw Error(ErrorKind::invalid_input, message);
}

template <typename Integer> Integer parse_number(const std::string &text, const char *what) {
    Integer value{};
    const char *end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc{} || ptr != end) {
        fail(std::string("invalid ") + what + ": '" + text.substr(0, 32) + "'");
    }
    return value;
}

void require_fields(std::span<const std::string> args, std::size_t minimum, const char *command) {
    if (args.size() < minimum) {
        fail(std::string(command) + " needs " + std::to_string(minimum) + " arguments, got " +
             std::to_string(args.size()));
    }
}

void require_exact_fields(std::span<const std::string> args, std::size_t count,
                          const char *command) {
    if (args.size() != count) {
        fail(std::string(command) + " takes " + std::to_string(count) + " arguments, got " +
             std::to_string(args.size()));
    }
}

constexpr std::size_t registration_fixed_fields = 7;

bool is_service_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

// The name reaches the worker's log: nothing but a short plain word.
void require_service_name(const std::string &name) {
    if (name.empty() || name.size() > max_service_name_length ||
        !std::all_of(name.begin(), name.end(), is_service_name_char)) {
        fail("invalid service name '" + name.substr(0, 32) + "'");
    }
}

struct RequestEncoder {
    std::vector<std::string> &fields;

    void operator()(const Register &r) const {
        const Registration &reg = r.registration;
        fields.insert(fields.end(), {"REGISTER", reg.user, reg.account_id, reg.device_token,
                                     reg.subtopic, std::to_string(reg.aps_version)});
        fields.insert(fields.end(), reg.mailboxes.begin(), reg.mailboxes.end());
    }
    void operator()(const Notify &n) const {
        fields.insert(fields.end(), {"NOTIFY", n.user, n.mailbox});
        fields.insert(fields.end(), n.events.begin(), n.events.end());
    }
    void operator()(const List &l) const {
        fields.emplace_back("LIST");
        if (!l.user.empty()) {
            fields.push_back(l.user);
        }
    }
    void operator()(const Purge &p) const {
        fields.emplace_back("PURGE");
        switch (p.scope) {
        case PurgeScope::user:
            fields.insert(fields.end(), {"user", p.value});
            break;
        case PurgeScope::token:
            fields.insert(fields.end(), {"token", p.value});
            break;
        case PurgeScope::all:
            fields.emplace_back("all");
            break;
        }
    }
    void operator()(const Status &) const { fields.emplace_back("STATUS"); }
    void operator()(const Test &t) const { fields.insert(fields.end(), {"TEST", t.user}); }
    void operator()(const Import &i) const {
        fields.emplace_back("IMPORT");
        auto reg_fields = registration_to_fields(i.registration);
        fields.insert(fields.end(), reg_fields.begin(), reg_fields.end());
    }
    void operator()(const Hello &h) const {
        fields.insert(fields.end(), {"HELLO", h.service, std::to_string(h.process_limit)});
    }
    void operator()(const Migrate &m) const {
        fields.insert(
            fields.end(),
            {"MIGRATE", m.direction == MigrationDirection::to_shared ? "to-shared" : "to-local"});
    }
};

Request decode_command(const std::string &command, std::span<const std::string> args) {
    if (command == "REGISTER") {
        require_fields(args, 5, "REGISTER");
        Register r;
        r.registration.user = args[0];
        r.registration.account_id = args[1];
        r.registration.device_token = args[2];
        r.registration.subtopic = args[3];
        r.registration.aps_version = parse_number<unsigned>(args[4], "aps_version");
        r.registration.mailboxes.assign(args.begin() + 5, args.end());
        return r;
    }
    if (command == "NOTIFY") {
        require_fields(args, 3, "NOTIFY");
        Notify n;
        n.user = args[0];
        n.mailbox = args[1];
        n.events.assign(args.begin() + 2, args.end());
        return n;
    }
    if (command == "LIST") {
        if (args.size() > 1) {
            fail("LIST takes at most 1 argument");
        }
        return List{args.empty() ? std::string() : args[0]};
    }
    if (command == "PURGE") {
        require_fields(args, 1, "PURGE");
        if (args[0] == "all") {
            require_exact_fields(args, 1, "PURGE all");
            return Purge{PurgeScope::all, {}};
        }
        require_exact_fields(args, 2, "PURGE");
        if (args[0] == "user") {
            return Purge{PurgeScope::user, args[1]};
        }
        if (args[0] == "token") {
            return Purge{PurgeScope::token, args[1]};
        }
        fail("PURGE scope must be user, token or all");
    }
    if (command == "STATUS") {
        require_exact_fields(args, 0, "STATUS");
        return Status{};
    }
    if (command == "TEST") {
        require_exact_fields(args, 1, "TEST");
        return Test{args[0]};
    }
    if (command == "IMPORT") {
        return Import{registration_from_fields(args)};
    }
    if (command == "HELLO") {
        require_exact_fields(args, 2, "HELLO");
        require_service_name(args[0]);
        return Hello{args[0], parse_number<unsigned>(args[1], "process_limit")};
    }
    if (command == "MIGRATE") {
        require_exact_fields(args, 1, "MIGRATE");
        if (args[0] == "to-shared") {
            return Migrate{MigrationDirection::to_shared};
        }
        if (args[0] == "to-local") {
            return Migrate{MigrationDirection::to_local};
        }
        fail("MIGRATE direction must be to-shared or to-local");
    }
    fail("unknown command '" + command.substr(0, 32) + "'");
}

} // namespace

PeerRole role_serving(const Request &request) noexcept {
    return std::holds_alternative<Register>(request) || std::holds_alternative<Notify>(request) ||
                   std::holds_alternative<Hello>(request)
               ? PeerRole::mail
               : PeerRole::admin;
}

const char *command_name(const Request &request) noexcept {
    static constexpr const char *names[] = {"REGISTER", "NOTIFY", "LIST",  "PURGE",  "STATUS",
                                            "TEST",     "IMPORT", "HELLO", "MIGRATE"};
    static_assert(std::size(names) == std::variant_size_v<Request>);
    return names[request.index()];
}

std::string encode_request(std::uint64_t id, const Request &request) {
    std::vector<std::string> fields{std::to_string(id)};
    std::visit(RequestEncoder{fields}, request);
    return join_line(fields);
}

std::uint64_t request_id_of(std::span<const std::string> fields) noexcept {
    if (fields.empty()) {
        return 0;
    }
    std::uint64_t id = 0;
    const std::string &text = fields[0];
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
    return ec == std::errc{} && ptr == text.data() + text.size() ? id : 0;
}

RequestLine decode_request(std::span<const std::string> fields) {
    if (fields.size() < 2) {
        fail("a request needs an id and a command");
    }
    std::uint64_t id = request_id_of(fields);
    if (id == 0) {
        fail("invalid request id '" + fields[0].substr(0, 32) + "'");
    }
    return RequestLine{id, decode_command(fields[1], fields.subspan(2))};
}

Reply Reply::ok(std::uint64_t id, std::vector<std::string> fields) {
    return Reply{id, ReplyStatus::ok, std::move(fields)};
}

Reply Reply::row(std::uint64_t id, std::vector<std::string> fields) {
    return Reply{id, ReplyStatus::row, std::move(fields)};
}

Reply Reply::fail(std::uint64_t id, ErrorKind kind, std::string message) {
    return Reply{id, ReplyStatus::fail, {std::string(error_kind_name(kind)), std::move(message)}};
}

Reply Reply::fail(std::uint64_t id, const Error &error) {
    return fail(id, error.kind(), error.what());
}

Error Reply::error() const {
    if (status != ReplyStatus::fail || fields.size() < 2) {
        return Error(ErrorKind::internal, "not a FAIL reply");
    }
    return Error(error_kind_from_name(fields[0]), fields[1]);
}

std::string encode_reply(const Reply &reply) {
    std::vector<std::string> fields{std::to_string(reply.id)};
    switch (reply.status) {
    case ReplyStatus::ok:
        fields.emplace_back("OK");
        break;
    case ReplyStatus::fail:
        fields.emplace_back("FAIL");
        break;
    case ReplyStatus::row:
        fields.emplace_back("ROW");
        break;
    }
    fields.insert(fields.end(), reply.fields.begin(), reply.fields.end());
    return join_line(fields);
}

Reply decode_reply(std::span<const std::string> fields) {
    if (fields.size() < 2) {
        fail("a reply needs an id and a status");
    }
    Reply reply;
    reply.id = request_id_of(fields);
    const std::string &status = fields[1];
    // Id 0 only answers a request line whose own id was unreadable.
    if (reply.id == 0 && (fields[0] != "0" || status != "FAIL")) {
        fail("invalid reply id '" + fields[0].substr(0, 32) + "'");
    }
    if (status == "OK") {
        reply.status = ReplyStatus::ok;
    } else if (status == "ROW") {
        reply.status = ReplyStatus::row;
    } else if (status == "FAIL") {
        reply.status = ReplyStatus::fail;
        if (fields.size() != 4) {
            fail("a FAIL reply needs a kind and a message");
        }
    } else {
        fail("unknown reply status '" + status.substr(0, 32) + "'");
    }
    reply.fields.assign(fields.begin() + 2, fields.end());
    return reply;
}

std::vector<std::string> registration_to_fields(const Registration &reg) {
    std::vector<std::string> fields{reg.user,
                                    reg.account_id,
                                    reg.device_token,
                                    reg.subtopic,
                                    std::to_string(reg.aps_version),
                                    std::to_string(reg.registered_at),
                                    std::to_string(reg.last_seen)};
    fields.insert(fields.end(), reg.mailboxes.begin(), reg.mailboxes.end());
    return fields;
}

Registration registration_from_fields(std::span<const std::string> fields) {
    require_fields(fields, registration_fixed_fields, "a registration");
    Registration reg;
    reg.user = fields[0];
    reg.account_id = fields[1];
    reg.device_token = fields[2];
    reg.subtopic = fields[3];
    reg.aps_version = parse_number<unsigned>(fields[4], "aps_version");
    reg.registered_at = parse_number<std::int64_t>(fields[5], "registered_at");
    reg.last_seen = parse_number<std::int64_t>(fields[6], "last_seen");
    reg.mailboxes.assign(fields.begin() + registration_fixed_fields, fields.end());
    return reg;
}

} // namespace xaps::protocol
