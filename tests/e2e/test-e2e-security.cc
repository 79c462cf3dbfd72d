// End to end, from an attacker's chair: what a mail process (the mail user
// vmail), a phone (an IMAP client) or anyone who reaches the worker's socket
// can and cannot do. The worker runs as its own user and alone reads the
// APNs key and the store; no reply leaks the key; a phone registers only for
// its own user; account ids reach Apple intact; the store stays bounded; and
// hostile bytes on the worker's socket crash nothing.
#include "e2e-fixture.h"
#include "e2e-processes.h"
#include "xaps-error.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <grp.h>
#include <pwd.h>
#include <random>
#include <set>
#include <string_view>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using Clock = std::chrono::steady_clock;
using xaps::Registration;
namespace fs = std::filesystem;

std::string read_text(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Runs `probe` in a child process that has become uid/gid (no supplementary
// groups) and returns what it returned: 0 for success or an errno value.
// The probe runs after fork() in a process with threads, so it may only make
// async-signal-safe calls (open, connect, kill...): everything it needs is
// prepared before.
int errno_as(uid_t uid, gid_t gid, const std::function<int()> &probe) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
            ::_exit(255);
        }
        ::_exit(probe());
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

int open_errno(const char *path, int flags) {
    const int fd = ::open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    ::close(fd);
    return 0;
}

int connect_errno(const char *path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return errno;
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::size_t length = 0;
    while (path[length] != '\0' && length + 1 < sizeof(address.sun_path)) {
        address.sun_path[length] = path[length];
        length++;
    }
    const int result = ::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address));
    const int error = result == 0 ? 0 : errno;
    ::close(fd);
    return error;
}

std::string describe_errno(int error) {
    return error == 0 ? "success" : error >= 254 ? "probe failed" : std::strerror(error);
}

// Lines the worker sent until it closed the connection or answered the
// marker request drain() sends last.
struct Drained {
    std::vector<std::string> lines;
    bool closed = false;
};

// An unknown command with an id no attack uses. The worker answers a
// connection's lines in order and refuses an unknown command at once, so its
// answer comes after everything the worker had to say about the lines before.
constexpr std::string_view drain_marker_id = "999999999";

Drained drain(LineConnection &connection) {
    Drained result;
    try {
        connection.write_all(std::string(drain_marker_id) + "\tMARKER\n");
    } catch (const xaps::Error &) {
        // Hung up already: reading says so.
    }
    connection.set_timeout(push_timeout);
    for (;;) {
        std::string line;
        try {
            line = connection.read_line();
        } catch (const xaps::Error &) {
            result.closed = connection.wait_for_close(1000ms);
            return result;
        }
        if (line.starts_with(std::string(drain_marker_id) + "\t")) {
            return result;
        }
        result.lines.push_back(line);
    }
}

LineConnection handshaken(const std::string &socket_path) {
    LineConnection connection = LineConnection::connect_unix(socket_path);
    connection.write_all("VERSION\txaps\t1\t0\n");
    EXPECT_TRUE(connection.read_line().starts_with("VERSION\txaps\t1\t"));
    return connection;
}

class E2eSecurity : public E2eTest {
protected:
    std::string key_path() const { return dovecot_->dir() + "/apns/client.key"; }
};

// The worker runs as `xaps`: not root, not the mail user, in no group of
// either.
TEST_F(E2eSecurity, WorkerRunsAsItsOwnUser) {
    start_dovecot(options());
    const pid_t worker = worker_pid(*dovecot_);
    ASSERT_GT(worker, 0);
    const SystemUser &xaps = dovecot_->worker_user();
    const SystemUser &vmail = dovecot_->mail_user();
    ASSERT_NE(xaps.uid, vmail.uid);
    const std::vector<long> uids = process_status_numbers(worker, "Uid");
    const std::vector<long> gids = process_status_numbers(worker, "Gid");
    EXPECT_EQ(uids, std::vector<long>(4, long(xaps.uid))) << "real, effective, saved, fs";
    EXPECT_EQ(gids, std::vector<long>(4, long(xaps.gid)));
    for (long group : process_status_numbers(worker, "Groups")) {
        EXPECT_NE(group, 0) << "in root's group";
        EXPECT_NE(group, long(vmail.gid)) << "in the mail user's group";
    }
    // And the master's replacement after a crash runs the same way.
    expected_log_lines_.push_back("child " + std::to_string(worker) + " killed with signal 9");
    ASSERT_EQ(::kill(worker, SIGKILL), 0);
    const pid_t respawned = wait_for_serving_worker(*dovecot_, worker, 15s);
    ASSERT_GT(respawned, 0);
    EXPECT_EQ(process_status_numbers(respawned, "Uid"), std::vector<long>(4, long(xaps.uid)));
}

// A mail process (the mail user) can neither read the APNs key nor the
// registration store, nor look into or signal the worker; the worker's own
// user can read them (so the probes really test the permissions).
TEST_F(E2eSecurity, CredentialsAndStoreAreOutOfTheMailUsersReach) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    register_phone(*imap, PhoneRegistration{}); // the store has data
    const pid_t worker = worker_pid(*dovecot_);
    ASSERT_GT(worker, 0);
    const SystemUser &vmail = dovecot_->mail_user();
    const SystemUser &xaps = dovecot_->worker_user();

    const std::string data_file = dovecot_->db_path() + "/data.mdb";
    const std::string lock_file = dovecot_->db_path() + "/lock.mdb";
    ASSERT_TRUE(fs::exists(data_file)) << "the store's file name changed?";
    const std::string proc_mem = "/proc/" + std::to_string(worker) + "/mem";
    const std::string proc_environ = "/proc/" + std::to_string(worker) + "/environ";
    struct Row {
        std::string what;
        std::string path;
        int flags;
    };
    const std::vector<Row> rows = {
        {"the APNs private key", key_path(), O_RDONLY},
        {"the credential directory", dovecot_->dir() + "/apns", O_RDONLY | O_DIRECTORY},
        {"the store's data file", data_file, O_RDONLY},
        {"the store's data file, for writing", data_file, O_RDWR},
        {"the store's lock file", lock_file, O_RDWR},
        {"the store's directory", dovecot_->db_path(), O_RDONLY | O_DIRECTORY},
        {"the worker's memory", proc_mem, O_RDONLY},
        {"the worker's environment", proc_environ, O_RDONLY},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.what + ": " + row.path);
        const char *path = row.path.c_str();
        const int flags = row.flags;
        const int as_mail_user =
            errno_as(vmail.uid, vmail.gid, [&] { return open_errno(path, flags); });
        EXPECT_TRUE(as_mail_user == EACCES || as_mail_user == EPERM)
            << "as " << vmail.name << ": " << describe_errno(as_mail_user);
        if (row.path == key_path()) {
            // Root's only: the worker read it before it dropped root.
            const int as_worker_user =
                errno_as(xaps.uid, xaps.gid, [&] { return open_errno(path, flags); });
            EXPECT_EQ(as_worker_user, EACCES)
                << "as " << xaps.name << ": " << describe_errno(as_worker_user);
        } else if (!row.path.starts_with("/proc/")) {
            const int as_worker_user =
                errno_as(xaps.uid, xaps.gid, [&] { return open_errno(path, flags); });
            EXPECT_EQ(as_worker_user, 0)
                << "as " << xaps.name << ": " << describe_errno(as_worker_user);
        }
    }
    const int signal_result = errno_as(
        vmail.uid, vmail.gid, [worker] { return ::kill(worker, SIGTERM) == 0 ? 0 : errno; });
    EXPECT_EQ(signal_result, EPERM) << "the mail user may not signal the worker";
    // The store's files are private even if the directory's mode were not.
    for (const std::string &file : {data_file, lock_file}) {
        struct stat st {};
        ASSERT_EQ(::stat(file.c_str(), &st), 0) << file;
        EXPECT_EQ(st.st_mode & 077, 0u) << file << " mode " << std::oct << (st.st_mode & 0777);
        EXPECT_EQ(st.st_uid, xaps.uid) << file;
    }
}

// The shipped mail listener (group dovecot, mode 0660, the fixture's) admits
// a mail process, which has group dovecot, and refuses anyone else.
TEST_F(E2eSecurity, SocketAdmitsOnlyTheConfiguredUser) {
    start_dovecot(options());
    const std::string socket = dovecot_->worker_socket_path();
    const char *path = socket.c_str();
    const SystemUser &vmail = dovecot_->mail_user();
    passwd *nobody = ::getpwnam("nobody");
    ASSERT_NE(nobody, nullptr);
    const uid_t nobody_uid = nobody->pw_uid;
    const gid_t nobody_gid = nobody->pw_gid;
    group *dovecot_group = ::getgrnam("dovecot");
    ASSERT_NE(dovecot_group, nullptr);
    const gid_t dovecot_gid = dovecot_group->gr_gid;
    struct stat st {};
    ASSERT_EQ(::stat(path, &st), 0);
    EXPECT_EQ(st.st_gid, dovecot_gid);
    EXPECT_EQ(st.st_mode & 07777, 0660u) << std::oct << (st.st_mode & 07777);
    EXPECT_EQ(errno_as(vmail.uid, dovecot_gid, [path] { return connect_errno(path); }), 0);
    const int as_nobody = errno_as(nobody_uid, nobody_gid, [path] { return connect_errno(path); });
    EXPECT_EQ(as_nobody, EACCES) << describe_errno(as_nobody);
    const SystemUser &xaps = dovecot_->worker_user();
    const int as_xaps = errno_as(xaps.uid, xaps.gid, [path] { return connect_errno(path); });
    EXPECT_EQ(as_xaps, EACCES) << describe_errno(as_xaps);
}

// Whatever the worker is asked, no reply carries the APNs private key, and
// neither do the IMAP replies nor Dovecot's log.
TEST_F(E2eSecurity, NoReplyOrLogCarriesKeyMaterial) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    ImapResponse registered = register_phone(*imap, PhoneRegistration{});
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    pushes_settled(1);

    LineConnection worker = handshaken(dovecot_->admin_socket_path());
    const std::string key = read_text(key_path());
    ASSERT_NE(key.find("PRIVATE KEY"), std::string::npos);
    const std::vector<std::string> requests = {
        "1\tLIST",
        "2\tLIST\talice",
        "3\tSTATUS",
        "4\tTEST\talice",
        "5\tLIST\t" + key_path(),
        "6\tREGISTER\talice\tacct\t" + key_path() + "\tcom.apple.mobilemail\t2\tINBOX",
        "7\tIMPORT\t../apns/client.key\ta\t00\tcom.apple.mobilemail\t2\t1\t1\tINBOX",
        "8\tPURGE\ttoken\t" + key_path(),
        "9\tSTATUS\tkey",
        "10\tTEST\t" + key_path(),
    };
    std::string all_replies = "\n";
    for (const std::string &request : requests) {
        worker.write_all(request + "\n");
    }
    // Until every request has its final answer (TEST's comes after Apple's).
    worker.set_timeout(push_timeout);
    std::set<std::string> unanswered;
    for (std::size_t id = 1; id <= requests.size(); id++) {
        unanswered.insert(std::to_string(id));
    }
    while (!unanswered.empty()) {
        std::string line;
        try {
            line = worker.read_line();
        } catch (const xaps::Error &error) {
            ADD_FAILURE() << error.what() << "\nno final reply to request(s) "
                          << *unanswered.begin() << "...\n"
                          << all_replies;
            break;
        }
        all_replies += line + "\n";
        const std::vector<std::string> fields = wire_fields(line);
        if (fields.size() >= 2 && (fields[1] == "OK" || fields[1] == "FAIL")) {
            unanswered.erase(fields[0]);
        }
    }

    // The key's markers, and every 24-character piece of its base64 body.
    std::vector<std::string> secrets = {"PRIVATE KEY", "BEGIN", "-----"};
    std::istringstream key_lines(key);
    for (std::string line; std::getline(key_lines, line);) {
        if (line.starts_with("-----")) {
            continue;
        }
        for (std::size_t i = 0; i + 24 <= line.size(); i += 24) {
            secrets.push_back(line.substr(i, 24));
        }
    }
    ASSERT_GT(secrets.size(), 10u);
    const std::map<std::string, std::string> texts = {
        {"worker replies", all_replies},
        {"IMAP replies", joined(registered.lines())},
        {"Dovecot's log", dovecot_->log()},
    };
    for (const auto &[where, text] : texts) {
        for (const std::string &secret : secrets) {
            EXPECT_EQ(text.find(secret), std::string::npos)
                << where << " contain key material: " << secret << "\n"
                << text;
        }
    }
}

// The registration is made for the logged-in user, whatever the client says:
// extra pairs naming another user are ignored, and only the phone's own
// user's mail pushes to it.
TEST_F(E2eSecurity, APhoneRegistersOnlyForItsOwnUser) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login("alice");
    ImapResponse reply = imap->command(
        xapplepushservice_command(PhoneRegistration{}) +
        R"( "user" "bob" "aps-user" "bob" "username" "bob" "aps-username" "bob@example.com")");
    ASSERT_TRUE(reply.ok()) << reply.tagged;
    std::vector<Registration> alice = registrations("alice");
    ASSERT_EQ(alice.size(), 1u);
    EXPECT_EQ(alice[0].user, "alice");
    EXPECT_TRUE(registrations("bob").empty());
    EXPECT_EQ(WorkerClient(dovecot_->admin_socket_path()).list().size(), 1u);

    ASSERT_EQ(deliver_to("bob@example.com").code, 250);
    EXPECT_TRUE(pushes_settled(0).empty()) << "bob's mail must not wake alice's phone";
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    EXPECT_EQ(pushes_settled(1).size(), 1u);
}

// Account ids with quotes, backslashes, braces and non-ASCII text reach Apple
// unchanged, as one JSON string: {"aps":{"account-id":"<id>"}} and nothing else.
TEST_F(E2eSecurity, HostileAccountIdsArriveIntactAsJsonStrings) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    const std::vector<std::string> account_ids = {
        R"(quote"inside)",
        R"(back\slash)",
        R"(\"},"aps":{"alert":"pwned"},"x":{"y":")",
        R"(\\"\\)",
        "\xc3\xbcnic\xc3\xb6"
        "de \xe2\x9c\x89 account",
        "</script><b>html</b>",
        "%s%n%x{0}$(id)`id`",
    };
    std::map<std::string, std::string> account_of_token;
    for (std::size_t i = 0; i < account_ids.size(); i++) {
        SCOPED_TRACE(account_ids[i]);
        PhoneRegistration phone;
        phone.account_id = account_ids[i];
        phone.device_token = device_token(unsigned(i + 1));
        register_phone(*imap, phone);
        account_of_token[phone.device_token] = account_ids[i];
    }
    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    std::vector<MockApnsRequest> pushes = pushes_settled(account_ids.size());
    ASSERT_EQ(pushes.size(), account_ids.size());
    for (const MockApnsRequest &push : pushes) {
        SCOPED_TRACE(push.body);
        std::optional<Json::Value> body = parse_json(push.body);
        ASSERT_TRUE(body.has_value()) << "not JSON";
        Json::Value expected;
        expected["aps"]["account-id"] = account_of_token[push.device_token];
        // The registered INBOX, hashed as iOS does: `printf INBOX | md5sum`.
        expected["aps"]["m"].append("7E33429F656F1E6E9D79B29C3F82C57E");
        EXPECT_EQ(*body, expected);
    }
}

// The per-user cap and the field bounds keep what one user can store bounded:
// beyond the cap the least recently seen device goes, and oversized fields
// are refused before they reach the store.
TEST_F(E2eSecurity, PerUserCapAndFieldBoundsKeepTheStoreBounded) {
    DovecotOptions settings = options();
    settings.plugin_settings["xaps_max_devices_per_user"] = "4";
    start_dovecot(std::move(settings));
    std::unique_ptr<ImapClient> imap = login();
    for (unsigned d = 1; d <= 10; d++) {
        PhoneRegistration phone;
        phone.device_token = device_token(d);
        register_phone(*imap, phone);
    }
    std::vector<Registration> stored = registrations();
    EXPECT_EQ(stored.size(), 4u) << "xaps_max_devices_per_user";
    EXPECT_NE(find_registration(stored, device_token(10)), nullptr) << "the newest stays";

    std::vector<std::string> many_mailboxes;
    for (int i = 0; i < 1001; i++) {
        many_mailboxes.push_back("m" + std::to_string(i));
    }
    struct Row {
        const char *name;
        PhoneRegistration phone;
    };
    std::vector<Row> rows;
    rows.push_back({"129-byte account id", {}});
    rows.back().phone.account_id = std::string(129, 'a');
    rows.push_back({"202 hex digits of device token", {}});
    rows.back().phone.device_token = std::string(202, 'a');
    rows.push_back({"odd-length device token", {}});
    rows.back().phone.device_token = std::string(63, 'a');
    rows.push_back({"1025-byte mailbox name", {}});
    rows.back().phone.mailboxes = {std::string(1025, 'm')};
    rows.push_back({"1001 mailboxes", {}});
    rows.back().phone.mailboxes = many_mailboxes;
    rows.push_back({"account id with a control character", {}});
    rows.back().phone.account_id = "tab\there";
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        ImapResponse reply = imap->command(xapplepushservice_command(row.phone));
        EXPECT_FALSE(reply.ok()) << reply.tagged;
        EXPECT_TRUE(reply.status() == "NO" || reply.status() == "BAD") << reply.tagged;
    }
    EXPECT_TRUE(imap->command("NOOP").ok());
    stored = registrations();
    EXPECT_EQ(stored.size(), 4u);
    for (const Registration &registration : stored) {
        EXPECT_LE(registration.account_id.size(), xaps::limits::max_account_id_length);
        EXPECT_LE(registration.device_token.size(), xaps::limits::max_device_token_length);
        EXPECT_LE(registration.mailboxes.size(), xaps::limits::max_mailboxes);
    }
}

// Hostile bytes straight at the worker's socket (as a compromised mail
// process could send them): the worker answers FAIL or hangs up, never
// crashes (same pid), stores nothing bogus, and serves the next client.
TEST_F(E2eSecurity, HostileInputAtTheWorkerSocketCrashesNothing) {
    start_dovecot(options());
    const pid_t worker = worker_pid(*dovecot_);
    ASSERT_GT(worker, 0);
    const std::string socket = dovecot_->worker_socket_path();
    std::mt19937 random(7);
    auto junk = [&random](std::size_t size) {
        std::string bytes(size, '\0');
        for (char &c : bytes) {
            c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(random));
        }
        return bytes;
    };

    struct Row {
        const char *name;
        std::function<void(LineConnection &)> attack;
        // Null: the attack ends by hanging up, nothing is read.
        std::function<void(const Drained &)> check;
    };
    auto fail_or_close = [](const Drained &result) {
        for (const std::string &line : result.lines) {
            EXPECT_NE(line.find("\tFAIL\t"), std::string::npos) << line.substr(0, 200);
        }
        EXPECT_TRUE(result.closed || !result.lines.empty()) << "neither FAIL nor hang-up";
    };
    auto closed = [](const Drained &result) { EXPECT_TRUE(result.closed); };
    const std::string two_mib(2 * 1024 * 1024, 'A');
    const std::vector<Row> rows = {
        {"a 2 MiB line after the handshake",
         [&](LineConnection &c) {
             c.write_all("VERSION\txaps\t1\t0\n");
             c.read_line();
             c.write_all("1\tLIST\t" + two_mib + "\n");
         },
         closed},
        {"a 2 MiB line instead of the handshake",
         [&](LineConnection &c) { c.write_all(two_mib + "\n"); }, closed},
        {"64 KiB of binary junk instead of the handshake",
         [&](LineConnection &c) { c.write_all(junk(64 * 1024)); }, closed},
        {"binary junk lines after the handshake",
         [&](LineConnection &c) {
             c.write_all("VERSION\txaps\t1\t0\n");
             c.read_line();
             for (int i = 0; i < 200; i++) {
                 std::string line = junk(100);
                 std::replace(line.begin(), line.end(), '\n', ' ');
                 c.write_all(std::to_string(i + 1) + "\t" + line + "\n");
             }
         },
         fail_or_close},
        {"a wrong protocol version",
         [&](LineConnection &c) { c.write_all("VERSION\txaps\t99\t0\n1\tLIST\n"); }, closed},
        {"10,000 unknown commands, pipelined",
         [&](LineConnection &c) {
             c.write_all("VERSION\txaps\t1\t0\n");
             c.read_line();
             std::string lines;
             for (int i = 1; i <= 10000; i++) {
                 lines += std::to_string(i) + "\tFROBNICATE\tx\n";
             }
             c.write_all(lines);
         },
         [](const Drained &result) {
             std::size_t fails = 0;
             for (const std::string &line : result.lines) {
                 fails += line.find("\tFAIL\t") != std::string::npos ? 1 : 0;
             }
             EXPECT_EQ(fails, 10000u) << "one FAIL per unknown command";
             EXPECT_FALSE(result.closed) << "unknown commands do not cost the connection";
         }},
        {"a line of 100,000 tabs",
         [&](LineConnection &c) {
             c.write_all("VERSION\txaps\t1\t0\n");
             c.read_line();
             c.write_all("1" + std::string(100000, '\t') + "\n");
         },
         fail_or_close},
        {"REGISTERs no plugin would send",
         [&](LineConnection &c) {
             c.write_all("VERSION\txaps\t1\t0\n");
             c.read_line();
             const std::string tail = "\tcom.apple.mobilemail\t2\tINBOX\n";
             c.write_all("1\tREGISTER\t\tacct\t00" + tail);              // no user
             c.write_all("2\tREGISTER\tmallory\tacct\tnothex" + tail);   // bad token
             c.write_all("3\tREGISTER\tmallory\t\xff\xfe\tabcd" + tail); // not UTF-8
             c.write_all("4\tREGISTER\tmallory\tacct\tabcd\tevil.topic\t2\tINBOX\n");
             c.write_all("5\tREGISTER\tmallory\tacct\tabcd\tcom.apple.mobilemail\t7\tINBOX\n");
             c.write_all("6\tREGISTER\t" + std::string(200, 'u') + "\tacct\tabcd" + tail);
             c.write_all("7\tREGISTER\tmallory\tacct\tabcd\tcom.apple.mobilemail\t2\t" +
                         std::string(2000, 'm') + "\n");
             c.write_all("8\tNOTIFY\tmallory\n");
             c.write_all("0\tLIST\n");
             c.write_all("-1\tLIST\n");
             c.write_all("99999999999999999999999\tLIST\n");
         },
         [](const Drained &result) {
             EXPECT_GE(result.lines.size(), 8u);
             for (const std::string &line : result.lines) {
                 EXPECT_NE(line.find("\tFAIL\t"), std::string::npos) << line;
             }
         }},
        {"half a line, then hang up",
         [&](LineConnection &c) { c.write_all("VERSION\txaps\t1\t0\n1\tREGIST"); }, nullptr},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        {
            LineConnection connection = LineConnection::connect_unix(socket);
            try {
                row.attack(connection);
            } catch (const xaps::Error &) {
                // The worker may hang up while the attack is still writing.
            }
            if (row.check) {
                row.check(drain(connection));
            }
        }
        EXPECT_EQ(worker_pid(*dovecot_), worker) << "the worker crashed";
        WorkerClient fresh(dovecot_->admin_socket_path());
        EXPECT_TRUE(fresh.list().empty()) << "nothing bogus was stored";
    }
    EXPECT_TRUE(dovecot_->log_problems().empty()) << dovecot_->log();
}

// A peer that floods requests and never reads the replies must not make the
// worker buffer without bound: its memory stays within a few MiB of where it
// started, and it keeps serving others meanwhile.
TEST_F(E2eSecurity, APeerThatNeverReadsCannotGrowTheWorker) {
    start_dovecot(options());
    std::unique_ptr<ImapClient> imap = login();
    register_phone(*imap, PhoneRegistration{});
    const pid_t worker = worker_pid(*dovecot_);
    ASSERT_GT(worker, 0);
    const long rss_before = process_rss_kib(worker);

    LineConnection flood = handshaken(dovecot_->admin_socket_path());
    // Each STATUS asks for about 1 KiB of reply: 200,000 of them would be
    // 200 MiB buffered in the worker if it kept reading.
    std::string batch;
    for (int i = 1; i <= 1000; i++) {
        batch += std::to_string(i) + "\tSTATUS\n";
    }
    ::fcntl(flood.fd(), F_SETFL, ::fcntl(flood.fd(), F_GETFL) | O_NONBLOCK);
    std::size_t sent = 0;
    const auto deadline = Clock::now() + 3s;
    for (int round = 0; round < 200 && Clock::now() < deadline; round++) {
        std::size_t offset = 0;
        while (offset < batch.size() && Clock::now() < deadline) {
            const ssize_t n =
                ::send(flood.fd(), batch.data() + offset, batch.size() - offset, MSG_NOSIGNAL);
            if (n > 0) {
                offset += std::size_t(n);
                sent += std::size_t(n);
            } else {
                std::this_thread::sleep_for(5ms); // the worker stopped reading: fine
            }
        }
    }
    // Others are still served while the flood waits: the registration would
    // otherwise end in the plugin's reply timeout, NO [UNAVAILABLE]. Served
    // after the flood became readable, it is also the mark after which the
    // worker's memory is measured.
    ImapResponse reply = imap->command(xapplepushservice_command(PhoneRegistration{}));
    EXPECT_TRUE(reply.ok()) << reply.tagged;
    const long rss_after = process_rss_kib(worker);
    EXPECT_LT(rss_after - rss_before, 64 * 1024)
        << "worker RSS grew from " << rss_before << " KiB to " << rss_after << " KiB after " << sent
        << " bytes of unread requests";
    EXPECT_EQ(worker_pid(*dovecot_), worker);

    // Once the flooder reads, the worker resumes reading its requests: the
    // answers keep coming past what was buffered when it stopped.
    ::fcntl(flood.fd(), F_SETFL, ::fcntl(flood.fd(), F_GETFL) & ~O_NONBLOCK);
    flood.set_timeout(60s);
    const std::size_t wanted = std::min<std::size_t>(sent / 8, 6000); // ~8 bytes per request
    std::size_t answered = 0;
    try {
        while (answered < wanted) {
            answered += flood.read_line().find("\tOK") != std::string::npos ? 1 : 0;
        }
    } catch (const xaps::Error &error) {
        ADD_FAILURE() << error.what();
    }
    EXPECT_EQ(answered, wanted) << "STATUS requests answered after the flooder started reading";
}

} // namespace
