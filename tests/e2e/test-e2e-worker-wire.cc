// The worker's wire format on its real sockets, in the literal lines of
// docs/worker-protocol.md ("Examples"), sent and compared byte for byte by a
// client that shares no code with the product's codec: the worker agrees with
// the document, not merely with the plugin built from the same codec.
#include "e2e-fixture.h"

#include <gtest/gtest.h>

#include <charconv>
#include <ctime>
#include <string>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;

constexpr const char *handshake = "VERSION\txaps\t1\t2\n";
constexpr const char *register_line =
    "1\tREGISTER\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\tcom.apple.mobilemail\t2\t"
    "INBOX\tSent Messages\n";
constexpr const char *register_ok =
    "1\tOK\tcom.apple.mail.XServer.0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c\n";
// A LIST row is the documented one but for its two times (registered_at,
// last_seen), which are the worker's clock: they go between these.
constexpr const char *row_before_times =
    "1\tROW\talice\t0715A26B-CA09-4730-A419-793000CA982E\t"
    "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a\tcom.apple.mobilemail\t2\t";
constexpr const char *row_after_times = "\tINBOX\tSent Messages\n";

std::int64_t unix_now() {
    return static_cast<std::int64_t>(std::time(nullptr));
}

// A decimal number of unix seconds, or -1.
std::int64_t unix_seconds(const std::string &text) {
    std::int64_t value = -1;
    const char *end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value);
    return !text.empty() && error == std::errc() && stop == end ? value : -1;
}

class E2eWorkerWire : public E2eTest {};

TEST_F(E2eWorkerWire, TheWorkerSpeaksTheDocumentedLines) {
    start_dovecot(options());

    // The mail listener, as an imap process speaks to it.
    WorkerClient mail(dovecot_->worker_socket_path());
    EXPECT_EQ(mail.server_version_line(), handshake);
    const std::int64_t before_register = unix_now();
    mail.send_line(register_line);
    EXPECT_EQ(mail.read_line(), register_ok);
    const std::int64_t after_register = unix_now();

    mail.send_line("5\tLIST\n");
    EXPECT_EQ(mail.read_line(),
              "5\tFAIL\tforbidden\tLIST is an admin command: it is served on the admin socket "
              "(xaps-admin, root only; doveadm xaps uses it), not on the mail socket\n");
    mail.send_line("6\tFROB\n");
    EXPECT_EQ(mail.read_line(), "6\tFAIL\tinvalid\tunknown command 'FROB'\n");
    mail.send_line("x\tSTATUS\n");
    EXPECT_EQ(mail.read_line(), "0\tFAIL\tinvalid\tinvalid request id 'x'\n");
    // The connection is still served after all that.
    mail.send_line("2\tNOTIFY\talice\tSent Messages\tMessageNew\tFlagsSet\n");
    EXPECT_EQ(mail.read_line(), "2\tOK\n");
    ASSERT_TRUE(wait_for_pushes(1)) << dovecot_->log();
    EXPECT_EQ(pushes()[0].device_token,
              "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a");
    // Escaped fields: a mailbox with a TAB, one with the escape byte.
    mail.send_line("3\tNOTIFY\talice\tTab\001there\tMessageNew\n");
    EXPECT_EQ(mail.read_line(), "3\tOK\n");
    mail.send_line("4\tNOTIFY\talice\tA\0011B\tMessageNew\n");
    EXPECT_EQ(mail.read_line(), "4\tOK\n");

    // The admin listener, as doveadm xaps speaks to it.
    WorkerClient admin(dovecot_->admin_socket_path());
    EXPECT_EQ(admin.server_version_line(), handshake);
    admin.send_line("1\tLIST\talice\n");
    const std::string row = admin.read_line();
    const std::string head = row_before_times;
    const std::string tail = row_after_times;
    ASSERT_GT(row.size(), head.size() + tail.size()) << row;
    EXPECT_EQ(row.substr(0, head.size()), head) << row;
    EXPECT_EQ(row.substr(row.size() - tail.size()), tail) << row;
    const std::string times = row.substr(head.size(), row.size() - head.size() - tail.size());
    const std::size_t tab = times.find('\t');
    ASSERT_NE(tab, std::string::npos) << row;
    const std::int64_t registered_at = unix_seconds(times.substr(0, tab));
    const std::int64_t last_seen = unix_seconds(times.substr(tab + 1));
    EXPECT_GE(registered_at, before_register) << row;
    EXPECT_LE(registered_at, after_register) << row;
    EXPECT_EQ(last_seen, registered_at) << "a first registration was last seen when made";
    EXPECT_EQ(admin.read_line(), "1\tOK\t1\n");

    admin.send_line("2\tPURGE\tuser\talice\n");
    EXPECT_EQ(admin.read_line(), "2\tOK\t1\n");
    admin.send_line("3\tLIST\talice\n");
    EXPECT_EQ(admin.read_line(), "3\tOK\t0\n");
}

} // namespace
