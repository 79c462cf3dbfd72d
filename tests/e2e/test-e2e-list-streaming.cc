// LIST of a store larger than the worker's output buffer, over the real admin
// socket: every row once, in key order, then the OK with the count, and a
// request sent right behind the LIST answered only after it.
#include "e2e-fixture.h"
#include "e2e-store-fill.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

namespace {

using namespace xaps::test;

// About 190 bytes a row: 5.7 MB of rows, beyond the worker's 3 MiB output
// high-water mark, so the listing has to wait for the reader.
constexpr unsigned registration_count = 30000;

std::string user_name(unsigned n) {
    char name[16];
    std::snprintf(name, sizeof(name), "user%05u", n);
    return name;
}

using E2eListStreaming = e2e::E2eTest;

TEST_F(E2eListStreaming, ALargeListingArrivesWholeInOrderBeforeTheNextAnswer) {
    dovecot_ = std::make_unique<DovecotInstance>(options());
    const std::int64_t now = std::time(nullptr);
    e2e::fill_store_before_start(*dovecot_, [&](xaps::RegistrationStore &store) {
        std::vector<xaps::Registration> batch;
        for (unsigned n = 0; n < registration_count; n++) {
            xaps::Registration phone;
            phone.user = user_name(n);
            phone.account_id = e2e::iphone_account_id;
            phone.device_token = e2e::device_token(n);
            phone.subtopic = "com.apple.mobilemail";
            phone.aps_version = 2;
            phone.mailboxes = {"INBOX", "Sent Messages"};
            batch.push_back(std::move(phone));
            if (batch.size() == 1000 || n + 1 == registration_count) {
                for (const auto &result : store.put_batch(batch, now)) {
                    ASSERT_FALSE(result.has_value()) << result->what();
                }
                batch.clear();
            }
        }
    });
    dovecot_->start();

    WorkerClient admin(dovecot_->admin_socket_path(), std::chrono::milliseconds(60000));
    // Both requests in one write: the worker reads the STATUS while the LIST
    // is still being written, and must hold its answer back.
    admin.send_line("1\tLIST\n2\tSTATUS\n");
    unsigned rows = 0;
    std::string previous_user;
    WireReply reply;
    for (;;) {
        reply = parse_wire_reply(admin.read_line());
        ASSERT_EQ(reply.id, 1u) << "an answer to request 2 before the LIST ended: " << reply.line;
        if (!reply.is_row()) {
            break;
        }
        ASSERT_FALSE(reply.fields.empty()) << reply.line;
        const std::string &user = reply.fields[0];
        ASSERT_EQ(user, user_name(rows)) << "row " << rows << " out of order: " << reply.line;
        EXPECT_GT(user, previous_user);
        previous_user = user;
        rows++;
    }
    EXPECT_TRUE(reply.ok()) << reply.line;
    EXPECT_EQ(reply.fields, (std::vector<std::string>{std::to_string(registration_count)}));
    EXPECT_EQ(rows, registration_count);

    WireReply status = parse_wire_reply(admin.read_line());
    EXPECT_EQ(status.id, 2u) << status.line;
    EXPECT_TRUE(status.is_row()) << status.line;
}

} // namespace
