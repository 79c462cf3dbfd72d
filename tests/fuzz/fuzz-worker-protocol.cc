// Fuzz target for the worker protocol codec (common/worker-protocol) and its
// tab escaping (common/tab-escape).
//
// The input is what arrives on the worker's socket: each "\n"-separated line
// is split into fields and decoded both as a request (the worker's side) and
// as a reply (the plugin's and doveadm's side). Invariants: only xaps::Error
// is thrown; whatever decodes survives encode + split + decode unchanged; a
// refused request gets a FAIL reply that itself goes over the wire intact;
// and escaping round-trips every field.
#include "fuzz-invariant.h"

#include "tab-escape.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace {

namespace protocol = xaps::protocol;

// Enough to mix requests and replies in one input without slowing the fuzzer.
constexpr std::size_t max_lines_per_input = 64;

bool same(const protocol::Register &a, const protocol::Register &b) {
    return a.registration == b.registration;
}
bool same(const protocol::Notify &a, const protocol::Notify &b) {
    return a.user == b.user && a.mailbox == b.mailbox && a.events == b.events;
}
bool same(const protocol::List &a, const protocol::List &b) {
    return a.user == b.user;
}
bool same(const protocol::Purge &a, const protocol::Purge &b) {
    return a.scope == b.scope && a.value == b.value;
}
bool same(const protocol::Status &, const protocol::Status &) {
    return true;
}
bool same(const protocol::Test &a, const protocol::Test &b) {
    return a.user == b.user;
}
bool same(const protocol::Import &a, const protocol::Import &b) {
    return a.registration == b.registration;
}
bool same(const protocol::Hello &a, const protocol::Hello &b) {
    return a.service == b.service && a.process_limit == b.process_limit;
}
bool same(const protocol::Migrate &a, const protocol::Migrate &b) {
    return a.direction == b.direction;
}

bool same_request(const protocol::Request &a, const protocol::Request &b) {
    if (a.index() != b.index()) {
        return false;
    }
    return std::visit(
        [&b](const auto &request) {
            return same(request, std::get<std::decay_t<decltype(request)>>(b));
        },
        a);
}

// An encoded line is one line: it ends with its only "\n".
std::vector<std::string> split_encoded(const std::string &line) {
    XAPS_FUZZ_CHECK(!line.empty() && line.back() == '\n');
    XAPS_FUZZ_CHECK(line.find('\n') == line.size() - 1);
    XAPS_FUZZ_CHECK(line.find('\r') == std::string::npos);
    return xaps::split_line(std::string_view(line).substr(0, line.size() - 1));
}

void check_escaping(std::string_view line, const std::vector<std::string> &fields) {
    XAPS_FUZZ_CHECK(fields.size() == static_cast<std::size_t>(std::ranges::count(line, '\t')) + 1);
    for (const std::string &field : fields) {
        std::string escaped = xaps::tab_escape(field);
        XAPS_FUZZ_CHECK(escaped.find_first_of("\t\r\n") == std::string::npos);
        XAPS_FUZZ_CHECK(xaps::tab_unescape(escaped) == field);
    }
    XAPS_FUZZ_CHECK(split_encoded(xaps::join_line(fields)) == fields);
}

bool same_reply(const protocol::Reply &a, const protocol::Reply &b) {
    return a.id == b.id && a.status == b.status && a.fields == b.fields;
}

void check_reply_round_trip(const protocol::Reply &reply) {
    protocol::Reply again = protocol::decode_reply(split_encoded(protocol::encode_reply(reply)));
    XAPS_FUZZ_CHECK(same_reply(again, reply));
}

void check_request(const std::vector<std::string> &fields) {
    try {
        protocol::RequestLine line = protocol::decode_request(fields);
        XAPS_FUZZ_CHECK(line.id != 0);
        XAPS_FUZZ_CHECK(line.id == protocol::request_id_of(fields));
        protocol::RequestLine again = protocol::decode_request(
            split_encoded(protocol::encode_request(line.id, line.request)));
        XAPS_FUZZ_CHECK(again.id == line.id);
        XAPS_FUZZ_CHECK(same_request(again.request, line.request));
    } catch (const xaps::Error &error) {
        XAPS_FUZZ_CHECK(error.kind() == xaps::ErrorKind::invalid_input);
        XAPS_FUZZ_CHECK(std::string_view(error.what()).size() > 0);
        // What the worker answers: FAIL with the line's id, if it has one.
        std::uint64_t id = protocol::request_id_of(fields);
        if (id != 0) {
            protocol::Reply reply = protocol::Reply::fail(id, error);
            check_reply_round_trip(reply);
            xaps::Error carried = reply.error();
            XAPS_FUZZ_CHECK(carried.kind() == xaps::ErrorKind::invalid_input);
            XAPS_FUZZ_CHECK(std::string_view(carried.what()) == error.what());
        }
    }
}

void check_reply(const std::vector<std::string> &fields) {
    try {
        protocol::Reply reply = protocol::decode_reply(fields);
        // Id 0 is a FAIL for a request line whose own id was unreadable.
        XAPS_FUZZ_CHECK(reply.id != 0 || reply.status == protocol::ReplyStatus::fail);
        XAPS_FUZZ_CHECK(reply.fields.size() + 2 == fields.size());
        check_reply_round_trip(reply);
        xaps::Error error = reply.error();
        if (reply.status == protocol::ReplyStatus::fail) {
            XAPS_FUZZ_CHECK(reply.fields.size() == 2);
            XAPS_FUZZ_CHECK(error.kind() == xaps::error_kind_from_name(reply.fields[0]));
            // what() is a C string: a message ends at its first NUL ("\0010").
            XAPS_FUZZ_CHECK(std::string_view(error.what()) ==
                            std::string_view(reply.fields[1].c_str()));
            // A known kind name and a NUL-free message survive being rebuilt
            // from the error.
            if (xaps::error_kind_name(error.kind()) == reply.fields[0] &&
                reply.fields[1].find('\0') == std::string::npos) {
                XAPS_FUZZ_CHECK(same_reply(protocol::Reply::fail(reply.id, error), reply));
            }
        } else {
            XAPS_FUZZ_CHECK(error.kind() == xaps::ErrorKind::internal);
        }
    } catch (const xaps::Error &error) {
        XAPS_FUZZ_CHECK(error.kind() == xaps::ErrorKind::invalid_input);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char *>(data), size);
    for (std::size_t lines = 0; lines < max_lines_per_input; lines++) {
        std::size_t end = input.find('\n');
        std::string_view line = input.substr(0, end);
        std::vector<std::string> fields = xaps::split_line(line);
        check_escaping(line, fields);
        check_request(fields);
        check_reply(fields);
        if (end == std::string_view::npos) {
            break;
        }
        input.remove_prefix(end + 1);
    }
    return 0;
}
