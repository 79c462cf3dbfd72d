#include "worker-protocol.h"

#include "tab-escape.h"

#include <gtest/gtest.h>

namespace protocol = xaps::protocol;

namespace {

std::vector<std::string> fields_of(const std::string &line) {
    EXPECT_EQ(line.back(), '\n');
    return xaps::split_line(std::string_view(line).substr(0, line.size() - 1));
}

xaps::Registration sample_registration() {
    xaps::Registration reg;
    reg.user = "alice@example.org";
    reg.account_id = "0715A26B-CA09-4730-A419-793000CA982E";
    reg.device_token = "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";
    reg.subtopic = "com.apple.mobilemail";
    reg.aps_version = 2;
    reg.mailboxes = {"INBOX", "Sent Messages", "Entwürfe", "tab\there"};
    reg.registered_at = 1700000000;
    reg.last_seen = 1700000100;
    return reg;
}

TEST(WorkerProtocol, RequestsRoundTrip) {
    xaps::Registration reg = sample_registration();
    xaps::Registration reg_without_times = reg;
    reg_without_times.registered_at = 0;
    reg_without_times.last_seen = 0;

    const std::vector<protocol::Request> requests = {
        protocol::Register{reg_without_times},
        protocol::Notify{"alice", "Sent Messages", {"MessageNew", "FlagsSet"}},
        protocol::List{},
        protocol::List{"alice"},
        protocol::Purge{protocol::PurgeScope::user, "alice"},
        protocol::Purge{protocol::PurgeScope::token, "abcd"},
        protocol::Purge{protocol::PurgeScope::all, ""},
        protocol::Status{},
        protocol::Test{"alice"},
        protocol::Import{reg},
        protocol::Hello{"imap", 5000},
        protocol::Migrate{protocol::MigrationDirection::to_shared},
        protocol::Migrate{protocol::MigrationDirection::to_local},
    };
    std::uint64_t id = 1;
    for (const auto &request : requests) {
        SCOPED_TRACE(id);
        std::string line = protocol::encode_request(id, request);
        auto decoded = protocol::decode_request(fields_of(line));
        EXPECT_EQ(decoded.id, id);
        EXPECT_EQ(decoded.request.index(), request.index());
        // Re-encoding the decoded request gives the same bytes.
        EXPECT_EQ(protocol::encode_request(id, decoded.request), line);
        id++;
    }
}

TEST(WorkerProtocol, RegisterCarriesEveryField) {
    xaps::Registration reg = sample_registration();
    std::string line = protocol::encode_request(7, protocol::Register{reg});
    auto decoded = std::get<protocol::Register>(protocol::decode_request(fields_of(line)).request);
    EXPECT_EQ(decoded.registration.user, reg.user);
    EXPECT_EQ(decoded.registration.account_id, reg.account_id);
    EXPECT_EQ(decoded.registration.device_token, reg.device_token);
    EXPECT_EQ(decoded.registration.subtopic, reg.subtopic);
    EXPECT_EQ(decoded.registration.aps_version, 2U);
    EXPECT_EQ(decoded.registration.mailboxes, reg.mailboxes);
}

struct BadRequest {
    const char *name;
    std::vector<std::string> fields;
};

TEST(WorkerProtocol, BadRequestsAreInvalidInput) {
    const BadRequest cases[] = {
        {"empty", {}},
        {"id only", {"1"}},
        {"zero id", {"0", "STATUS"}},
        {"negative id", {"-1", "STATUS"}},
        {"non-numeric id", {"x", "STATUS"}},
        {"unknown command", {"1", "FROB"}},
        {"lower-case command", {"1", "status"}},
        {"register too short", {"1", "REGISTER", "u", "a", "t", "s"}},
        {"register bad version", {"1", "REGISTER", "u", "a", "t", "s", "two"}},
        {"register version overflow", {"1", "REGISTER", "u", "a", "t", "s", "99999999999999"}},
        {"notify without event", {"1", "NOTIFY", "u", "INBOX"}},
        {"list two users", {"1", "LIST", "a", "b"}},
        {"purge no scope", {"1", "PURGE"}},
        {"purge bad scope", {"1", "PURGE", "device", "x"}},
        {"purge user without name", {"1", "PURGE", "user"}},
        {"purge all with value", {"1", "PURGE", "all", "x"}},
        {"status with argument", {"1", "STATUS", "x"}},
        {"test without user", {"1", "TEST"}},
        {"import short", {"1", "IMPORT", "u", "a", "t", "s", "2", "1"}},
        {"import bad time", {"1", "IMPORT", "u", "a", "t", "s", "2", "yesterday", "1"}},
        {"hello without limit", {"1", "HELLO", "imap"}},
        {"hello with extra field", {"1", "HELLO", "imap", "5000", "x"}},
        {"hello empty service", {"1", "HELLO", "", "5000"}},
        {"hello service with space", {"1", "HELLO", "imap 2", "5000"}},
        {"hello service with control", {"1", "HELLO", "imap\n", "5000"}},
        {"hello service too long", {"1", "HELLO", std::string(65, 'a'), "5000"}},
        {"hello negative limit", {"1", "HELLO", "imap", "-1"}},
        {"hello non-numeric limit", {"1", "HELLO", "imap", "many"}},
        {"hello limit overflow", {"1", "HELLO", "imap", "4294967296"}},
        {"migrate without direction", {"1", "MIGRATE"}},
        {"migrate unknown direction", {"1", "MIGRATE", "to-lmdb"}},
        {"migrate upper-case direction", {"1", "MIGRATE", "TO-SHARED"}},
        {"migrate with extra field", {"1", "MIGRATE", "to-shared", "x"}},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.name);
        try {
            protocol::decode_request(c.fields);
            ADD_FAILURE() << "decoded";
        } catch (const xaps::Error &e) {
            EXPECT_EQ(e.kind(), xaps::ErrorKind::invalid_input);
            EXPECT_STRNE(e.what(), "");
        }
    }
}

TEST(WorkerProtocol, RequestIdSurvivesBadCommand) {
    std::vector<std::string> fields{"42", "FROB"};
    EXPECT_EQ(protocol::request_id_of(fields), 42U);
    EXPECT_EQ(protocol::request_id_of(std::vector<std::string>{"4x2"}), 0U);
}

TEST(WorkerProtocol, RepliesRoundTrip) {
    const std::vector<protocol::Reply> replies = {
        protocol::Reply::ok(1),
        protocol::Reply::ok(2, {"com.apple.mail.XServer.abc"}),
        protocol::Reply::row(3, {"a", "", "c\td"}),
        protocol::Reply::fail(4, xaps::ErrorKind::unavailable, "store\nis down"),
    };
    for (const auto &reply : replies) {
        SCOPED_TRACE(reply.id);
        auto decoded = protocol::decode_reply(fields_of(protocol::encode_reply(reply)));
        EXPECT_EQ(decoded.id, reply.id);
        EXPECT_EQ(decoded.status, reply.status);
        EXPECT_EQ(decoded.fields, reply.fields);
    }
}

TEST(WorkerProtocol, FailReplyCarriesTheError) {
    auto reply = protocol::Reply::fail(9, xaps::Error(xaps::ErrorKind::not_found, "no such user"));
    auto decoded = protocol::decode_reply(fields_of(protocol::encode_reply(reply)));
    xaps::Error error = decoded.error();
    EXPECT_EQ(error.kind(), xaps::ErrorKind::not_found);
    EXPECT_STREQ(error.what(), "no such user");
}

TEST(WorkerProtocol, FailForAnUnreadableRequestHasIdZero) {
    auto reply = protocol::Reply::fail(protocol::request_id_of(std::vector<std::string>{"??"}),
                                       xaps::ErrorKind::invalid_input, "bad line");
    auto decoded = protocol::decode_reply(fields_of(protocol::encode_reply(reply)));
    EXPECT_EQ(decoded.id, 0U);
    EXPECT_EQ(decoded.status, protocol::ReplyStatus::fail);
}

TEST(WorkerProtocol, BadRepliesAreInvalidInput) {
    const std::vector<std::vector<std::string>> cases = {
        {},
        {"1"},
        {"x", "OK"},
        {"0", "OK"},
        {"x", "FAIL", "invalid", "m"},
        {"1", "MAYBE"},
        {"1", "FAIL", "invalid"},
    };
    for (const auto &fields : cases) {
        EXPECT_THROW(protocol::decode_reply(fields), xaps::Error);
    }
}

TEST(WorkerProtocol, HelloIsOneLineOfServiceAndLimit) {
    EXPECT_EQ(protocol::encode_request(7, protocol::Hello{"imap", 5000}), "7\tHELLO\timap\t5000\n");
    const auto line = protocol::decode_request(
        std::vector<std::string>{"8", "HELLO", "imap-other_2.x", "4294967295"});
    EXPECT_EQ(line.id, 8U);
    const auto &hello = std::get<protocol::Hello>(line.request);
    EXPECT_EQ(hello.service, "imap-other_2.x");
    EXPECT_EQ(hello.process_limit, 4294967295U);
    // The longest service name accepted.
    const std::string longest(64, 's');
    EXPECT_EQ(
        std::get<protocol::Hello>(
            protocol::decode_request(std::vector<std::string>{"9", "HELLO", longest, "0"}).request)
            .service,
        longest);
}

// A 1.1 worker never gets HELLO: the plugin sends it only to minor 2 or later.
TEST(WorkerProtocol, HelloCameWithMinorVersionTwo) {
    EXPECT_EQ(protocol::major_version, 1U);
    EXPECT_EQ(protocol::minor_version, 2U);
    EXPECT_EQ(protocol::hello_minor_version, 2U);
}

TEST(WorkerProtocol, RegistrationFieldsRoundTrip) {
    xaps::Registration reg = sample_registration();
    EXPECT_EQ(protocol::registration_from_fields(protocol::registration_to_fields(reg)), reg);
}

} // namespace

TEST(WorkerProtocol, EachCommandHasItsListenerAndName) {
    struct Case {
        protocol::Request request;
        const char *name;
        protocol::PeerRole listener;
    };
    const Case cases[] = {
        {protocol::Register{}, "REGISTER", protocol::PeerRole::mail},
        {protocol::Notify{}, "NOTIFY", protocol::PeerRole::mail},
        {protocol::List{}, "LIST", protocol::PeerRole::admin},
        {protocol::Purge{}, "PURGE", protocol::PeerRole::admin},
        {protocol::Status{}, "STATUS", protocol::PeerRole::admin},
        {protocol::Test{}, "TEST", protocol::PeerRole::admin},
        {protocol::Import{}, "IMPORT", protocol::PeerRole::admin},
        {protocol::Hello{}, "HELLO", protocol::PeerRole::mail},
        {protocol::Migrate{}, "MIGRATE", protocol::PeerRole::admin},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.name);
        EXPECT_STREQ(protocol::command_name(c.request), c.name);
        EXPECT_EQ(protocol::role_serving(c.request), c.listener);
    }
}

TEST(WorkerProtocol, MigrateNamesItsDirection) {
    EXPECT_EQ(
        protocol::encode_request(4, protocol::Migrate{protocol::MigrationDirection::to_shared}),
        "4\tMIGRATE\tto-shared\n");
    EXPECT_EQ(
        protocol::encode_request(5, protocol::Migrate{protocol::MigrationDirection::to_local}),
        "5\tMIGRATE\tto-local\n");
    const std::vector<std::string> fields{"6", "MIGRATE", "to-local"};
    const auto decoded = std::get<protocol::Migrate>(protocol::decode_request(fields).request);
    EXPECT_EQ(decoded.direction, protocol::MigrationDirection::to_local);
}

TEST(WorkerProtocol, ForbiddenIsAFailKindOfItsOwn) {
    const auto reply =
        protocol::Reply::fail(3, xaps::ErrorKind::forbidden, "LIST is an admin command");
    EXPECT_EQ(protocol::encode_reply(reply), "3\tFAIL\tforbidden\tLIST is an admin command\n");
}

// The literal exchanges of docs/worker-protocol.md ("Examples"), copied from
// the document: what the plugin and doveadm send must decode to what the
// document says, and what the worker answers must be those bytes exactly.
namespace documented {

const std::string handshake = "VERSION\txaps\t1\t2\n";
const std::string register_line =
    "1\tREGISTER\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\tcom.apple.mobilemail\t2\t"
    "INBOX\tSent Messages\n";
const std::string register_ok =
    "1\tOK\tcom.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c\n";
const std::string notify_line = "2\tNOTIFY\talice\tSent Messages\tMessageNew\tFlagsSet\n";
const std::string notify_ok = "2\tOK\n";
const std::string notify_tab_line = "3\tNOTIFY\talice\tTab\001there\tMessageNew\n";
const std::string notify_escape_line = "4\tNOTIFY\talice\tA\0011B\tMessageNew\n";
const std::string forbidden_list_line = "5\tLIST\n";
const std::string forbidden_list_fail =
    "5\tFAIL\tforbidden\tLIST is an admin command: it is served on the admin socket "
    "(xaps-admin, root only; doveadm xaps uses it), not on the mail socket\n";
const std::string unknown_command_line = "6\tFROB\n";
const std::string unknown_command_fail = "6\tFAIL\tinvalid\tunknown command 'FROB'\n";
const std::string unreadable_id_line = "x\tSTATUS\n";
const std::string unreadable_id_fail = "0\tFAIL\tinvalid\tinvalid request id 'x'\n";
const std::string hello_line = "7\tHELLO\timap\t5000\n";
const std::string hello_ok = "7\tOK\n";
const std::string list_line = "1\tLIST\talice\n";
const std::string list_row =
    "1\tROW\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\tcom.apple.mobilemail\t2\t"
    "1700000000\t1700000000\tINBOX\tSent Messages\n";
const std::string list_ok = "1\tOK\t1\n";
const std::string purge_line = "2\tPURGE\tuser\talice\n";
const std::string purge_ok = "2\tOK\t1\n";
const std::string list_all_line = "3\tLIST\n";
const std::string list_all_ok = "3\tOK\t0\n";
const std::string migrate_line = "4\tMIGRATE\tto-shared\n";
const std::string migrate_first_row = "4\tROW\t1000\t0\n";
const std::string migrate_ok = "4\tOK\t1498\t2\n";
const std::string migrate_unshared_line = "5\tMIGRATE\tto-local\n";
const std::string migrate_unshared_fail =
    "5\tFAIL\tconfig\txaps_shared_store is not set: there is no shared store to migrate to or "
    "from\n";

xaps::Registration alices_phone(std::int64_t registered_at) {
    xaps::Registration phone;
    phone.user = "alice";
    phone.account_id = "0715A26B-CA09-4730-A419-793000CA982E";
    phone.device_token = "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";
    phone.subtopic = "com.apple.mobilemail";
    phone.aps_version = 2;
    phone.mailboxes = {"INBOX", "Sent Messages"};
    phone.registered_at = registered_at;
    phone.last_seen = registered_at;
    return phone;
}

// How the worker answers a line it cannot decode (worker-connection.cc).
std::string reply_to_undecodable(const std::string &line) {
    const std::vector<std::string> fields = fields_of(line);
    try {
        protocol::decode_request(fields);
    } catch (const xaps::Error &error) {
        return protocol::encode_reply(
            protocol::Reply::fail(protocol::request_id_of(fields), error));
    }
    ADD_FAILURE() << "decoded: " << line;
    return {};
}

} // namespace documented

TEST(WorkerProtocolDocument, TheHandshakeLineIsTheDocumentedOne) {
    const std::vector<std::string> version{"VERSION", protocol::service_name,
                                           std::to_string(protocol::major_version),
                                           std::to_string(protocol::minor_version)};
    EXPECT_EQ(xaps::join_line(version), documented::handshake);
}

TEST(WorkerProtocolDocument, RegisterDecodesToTheDocumentedFields) {
    const auto line = protocol::decode_request(fields_of(documented::register_line));
    EXPECT_EQ(line.id, 1U);
    const auto &registration = std::get<protocol::Register>(line.request).registration;
    EXPECT_EQ(registration.user, "alice");
    EXPECT_EQ(registration.account_id, "0715A26B-CA09-4730-A419-793000CA982E");
    EXPECT_EQ(registration.device_token,
              "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a");
    EXPECT_EQ(registration.subtopic, "com.apple.mobilemail");
    EXPECT_EQ(registration.aps_version, 2U);
    EXPECT_EQ(registration.mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));
}

TEST(WorkerProtocolDocument, ThePluginsRegisterIsTheDocumentedLine) {
    EXPECT_EQ(protocol::encode_request(1, protocol::Register{documented::alices_phone(0)}),
              documented::register_line);
}

TEST(WorkerProtocolDocument, NotifyDecodesToTheDocumentedFields) {
    const auto line = protocol::decode_request(fields_of(documented::notify_line));
    EXPECT_EQ(line.id, 2U);
    const auto &notify = std::get<protocol::Notify>(line.request);
    EXPECT_EQ(notify.user, "alice");
    EXPECT_EQ(notify.mailbox, "Sent Messages");
    EXPECT_EQ(notify.events, (std::vector<std::string>{"MessageNew", "FlagsSet"}));
    EXPECT_EQ(protocol::encode_request(2, notify), documented::notify_line);
}

TEST(WorkerProtocolDocument, EscapedFieldsDecodeToTheirBytes) {
    struct Case {
        const std::string &line;
        std::uint64_t id;
        std::string mailbox;
    };
    const Case cases[] = {
        {documented::notify_tab_line, 3, "Tab\there"},
        {documented::notify_escape_line, 4, "A\001B"},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.line);
        const auto line = protocol::decode_request(fields_of(c.line));
        EXPECT_EQ(line.id, c.id);
        const auto &notify = std::get<protocol::Notify>(line.request);
        EXPECT_EQ(notify.mailbox, c.mailbox);
        EXPECT_EQ(notify.events, std::vector<std::string>{"MessageNew"});
        EXPECT_EQ(protocol::encode_request(c.id, notify), c.line);
    }
}

TEST(WorkerProtocolDocument, ThePluginsHelloIsTheDocumentedLine) {
    const auto line = protocol::decode_request(fields_of(documented::hello_line));
    EXPECT_EQ(line.id, 7U);
    EXPECT_EQ(std::get<protocol::Hello>(line.request).service, "imap");
    EXPECT_EQ(std::get<protocol::Hello>(line.request).process_limit, 5000U);
    EXPECT_EQ(protocol::encode_request(7, protocol::Hello{"imap", 5000}), documented::hello_line);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(7)), documented::hello_ok);
}

TEST(WorkerProtocolDocument, AdminRequestsDecodeToTheDocumentedFields) {
    auto line = protocol::decode_request(fields_of(documented::list_line));
    EXPECT_EQ(line.id, 1U);
    EXPECT_EQ(std::get<protocol::List>(line.request).user, "alice");

    line = protocol::decode_request(fields_of(documented::purge_line));
    EXPECT_EQ(line.id, 2U);
    EXPECT_EQ(std::get<protocol::Purge>(line.request).scope, protocol::PurgeScope::user);
    EXPECT_EQ(std::get<protocol::Purge>(line.request).value, "alice");

    line = protocol::decode_request(fields_of(documented::list_all_line));
    EXPECT_EQ(line.id, 3U);
    EXPECT_EQ(std::get<protocol::List>(line.request).user, "");

    line = protocol::decode_request(fields_of(documented::forbidden_list_line));
    EXPECT_EQ(line.id, 5U);
    EXPECT_TRUE(std::holds_alternative<protocol::List>(line.request));
}

TEST(WorkerProtocolDocument, DoveadmsRequestsAreTheDocumentedLines) {
    EXPECT_EQ(protocol::encode_request(1, protocol::List{"alice"}), documented::list_line);
    EXPECT_EQ(protocol::encode_request(2, protocol::Purge{protocol::PurgeScope::user, "alice"}),
              documented::purge_line);
    EXPECT_EQ(protocol::encode_request(3, protocol::List{}), documented::list_all_line);
}

TEST(WorkerProtocolDocument, DoveadmsMigrateIsTheDocumentedExchange) {
    EXPECT_EQ(
        protocol::encode_request(4, protocol::Migrate{protocol::MigrationDirection::to_shared}),
        documented::migrate_line);
    EXPECT_EQ(
        protocol::encode_request(5, protocol::Migrate{protocol::MigrationDirection::to_local}),
        documented::migrate_unshared_line);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::row(4, {"1000", "0"})),
              documented::migrate_first_row);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(4, {"1498", "2"})),
              documented::migrate_ok);
    const auto fail = protocol::decode_reply(fields_of(documented::migrate_unshared_fail));
    EXPECT_EQ(fail.id, 5U);
    EXPECT_EQ(fail.error().kind(), xaps::ErrorKind::config);
    EXPECT_STREQ(fail.error().what(), "xaps_shared_store is not set: there is no shared store to "
                                      "migrate to or from");
}

TEST(WorkerProtocolDocument, RepliesEncodeToTheDocumentedLines) {
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(
                  1, {"com.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c"})),
              documented::register_ok);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(2)), documented::notify_ok);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::row(
                  1, protocol::registration_to_fields(documented::alices_phone(1700000000)))),
              documented::list_row);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(1, {"1"})), documented::list_ok);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(2, {"1"})), documented::purge_ok);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::ok(3, {"0"})), documented::list_all_ok);
    EXPECT_EQ(protocol::encode_reply(protocol::Reply::fail(
                  5, xaps::ErrorKind::forbidden,
                  "LIST is an admin command: it is served on the admin socket (xaps-admin, root "
                  "only; doveadm xaps uses it), not on the mail socket")),
              documented::forbidden_list_fail);
}

TEST(WorkerProtocolDocument, UndecodableLinesGetTheDocumentedFail) {
    EXPECT_EQ(documented::reply_to_undecodable(documented::unknown_command_line),
              documented::unknown_command_fail);
    EXPECT_EQ(documented::reply_to_undecodable(documented::unreadable_id_line),
              documented::unreadable_id_fail);
}

TEST(WorkerProtocolDocument, DocumentedRepliesDecodeToTheirFields) {
    auto reply = protocol::decode_reply(fields_of(documented::register_ok));
    EXPECT_EQ(reply.id, 1U);
    EXPECT_EQ(reply.status, protocol::ReplyStatus::ok);
    EXPECT_EQ(reply.fields, std::vector<std::string>{
                                "com.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c"});

    reply = protocol::decode_reply(fields_of(documented::list_row));
    EXPECT_EQ(reply.status, protocol::ReplyStatus::row);
    EXPECT_EQ(protocol::registration_from_fields(reply.fields),
              documented::alices_phone(1700000000));

    reply = protocol::decode_reply(fields_of(documented::list_ok));
    EXPECT_EQ(reply.status, protocol::ReplyStatus::ok);
    EXPECT_EQ(reply.fields, std::vector<std::string>{"1"});

    reply = protocol::decode_reply(fields_of(documented::forbidden_list_fail));
    EXPECT_EQ(reply.id, 5U);
    EXPECT_EQ(reply.error().kind(), xaps::ErrorKind::forbidden);
    EXPECT_STREQ(reply.error().what(),
                 "LIST is an admin command: it is served on the admin socket (xaps-admin, root "
                 "only; doveadm xaps uses it), not on the mail socket");

    reply = protocol::decode_reply(fields_of(documented::unreadable_id_fail));
    EXPECT_EQ(reply.id, 0U);
    EXPECT_EQ(reply.error().kind(), xaps::ErrorKind::invalid_input);
    EXPECT_STREQ(reply.error().what(), "invalid request id 'x'");
}
