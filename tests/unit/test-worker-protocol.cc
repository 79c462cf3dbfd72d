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
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.name);
        EXPECT_STREQ(protocol::command_name(c.request), c.name);
        EXPECT_EQ(protocol::role_serving(c.request), c.listener);
    }
}

TEST(WorkerProtocol, ForbiddenIsAFailKindOfItsOwn) {
    const auto reply =
        protocol::Reply::fail(3, xaps::ErrorKind::forbidden, "LIST is an admin command");
    EXPECT_EQ(protocol::encode_reply(reply), "3\tFAIL\tforbidden\tLIST is an admin command\n");
}
