// End to end, least privilege: the worker's two listeners as the package
// ships them. Only processes with group dovecot (the mail processes) reach
// the mail listener, and there only REGISTER and NOTIFY are served; only root
// reaches the admin listener. The real mail processes still register and
// notify, with one virtual mail uid and with a system user per mail user;
// dovecot-lda pushes when its user has group dovecot and, without it,
// delivers anyway and warns once. The worker cannot be read or traced
// through /proc by its own uid.
#include "e2e-fixture.h"
#include "e2e-processes.h"
#include "test-files.h"
#include "unique-fd.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <grp.h>
#include <pwd.h>
#include <sstream>
#include <string>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <vector>

#ifndef XAPS_DOVEADM_MODULE_PATH
#error "meson must define XAPS_DOVEADM_MODULE_PATH"
#endif

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using xaps::Registration;
namespace fs = std::filesystem;

constexpr const char *lda_binary = "/usr/lib/dovecot/dovecot-lda";
constexpr const char *doveadm_binary = "/usr/bin/doveadm";
constexpr const char *doveadm_module_dir = "/usr/lib/dovecot/modules/doveadm";
// Bounds a command that hangs; a healthy one takes well under a second.
constexpr auto command_time_limit = 120s;

// Who a probe runs as: uid, primary gid and the supplementary groups.
struct Identity {
    std::string name; // for failure messages
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
};

Identity identity_of(const SystemUser &user, std::vector<gid_t> groups = {}) {
    return Identity{user.name, user.uid, user.gid, std::move(groups)};
}

gid_t group_id(const char *name) {
    const group *entry = ::getgrnam(name);
    if (entry == nullptr) {
        throw std::runtime_error(std::string("no group ") + name);
    }
    return entry->gr_gid;
}

Identity nobody() {
    const passwd *entry = ::getpwnam("nobody");
    if (entry == nullptr) {
        throw std::runtime_error("no user nobody");
    }
    return Identity{"nobody", entry->pw_uid, entry->pw_gid, {}};
}

// Becomes `who` in a child process: only async-signal-safe calls.
bool become(const Identity &who) {
    return ::setgroups(who.groups.size(), who.groups.data()) == 0 && ::setgid(who.gid) == 0 &&
           ::setuid(who.uid) == 0;
}

// connect(2) as someone else: 0 and the connected socket, or the errno.
struct Connected {
    int error = 0;
    UniqueFd socket;
};

// A child process becomes `who`, connects, and hands the socket back over a
// socketpair (SCM_RIGHTS): the kernel checks the socket file's mode at
// connect time, so the parent then speaks for `who`. The test has threads
// (the mock APNs server), so the child only makes async-signal-safe calls;
// everything it needs is prepared before fork().
Connected connect_as(const Identity &who, const std::string &path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path)) {
        throw std::runtime_error("socket path too long: " + path);
    }
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    int channel[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
        throw std::runtime_error("socketpair failed");
    }
    UniqueFd ours(channel[0]);
    UniqueFd theirs(channel[1]);
    const pid_t pid = ::fork();
    if (pid == 0) {
        int result = -1; // could not become `who`
        int fd = -1;
        if (become(who)) {
            fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            result = fd >= 0 && ::connect(fd, reinterpret_cast<const sockaddr *>(&address),
                                          sizeof(address)) == 0
                         ? 0
                         : errno;
        }
        iovec data{&result, sizeof(result)};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        msghdr message{};
        message.msg_iov = &data;
        message.msg_iovlen = 1;
        if (result == 0) {
            message.msg_control = control;
            message.msg_controllen = sizeof(control);
            cmsghdr *header = CMSG_FIRSTHDR(&message);
            header->cmsg_level = SOL_SOCKET;
            header->cmsg_type = SCM_RIGHTS;
            header->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
        }
        ::_exit(::sendmsg(channel[1], &message, MSG_NOSIGNAL) == sizeof(result) ? 0 : 1);
    }
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    theirs.reset();
    Connected connected;
    int result = -1;
    iovec data{&result, sizeof(result)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    const ssize_t received = ::recvmsg(ours.get(), &message, MSG_CMSG_CLOEXEC);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (received != sizeof(result) || result < 0) {
        throw std::runtime_error("the probe could not become " + who.name);
    }
    connected.error = result;
    if (const cmsghdr *header = CMSG_FIRSTHDR(&message);
        header != nullptr && header->cmsg_type == SCM_RIGHTS) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(header), sizeof(int));
        connected.socket.reset(fd);
    }
    return connected;
}

std::string describe_errno(int error) {
    return error == 0 ? "connected" : std::strerror(error);
}

// PTRACE_SEIZE as `who`: 0 or the errno. SEIZE does not stop the target, so
// a successful attach ends harmlessly when the child exits.
int ptrace_errno_as(const Identity &who, pid_t target) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (!become(who)) {
            ::_exit(255);
        }
        ::_exit(::ptrace(PTRACE_SEIZE, target, nullptr, nullptr) == 0 ? 0 : errno);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

// Runs argv (argv[0] a path) with its output in out_path; its exit status,
// or -1 when it was killed or did not exit normally.
int run_command(const std::vector<std::string> &argv, const std::string &out_path) {
    const pid_t pid = spawn_process(argv, out_path, out_path);
    const auto deadline = std::chrono::steady_clock::now() + command_time_limit;
    for (;;) {
        int status = 0;
        const pid_t done = ::waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(20ms);
    }
}

// setpriv's options that make the command run as `who`.
std::vector<std::string> setpriv_as(const Identity &who) {
    std::vector<std::string> argv = {"/usr/bin/setpriv", "--reuid=" + std::to_string(who.uid),
                                     "--regid=" + std::to_string(who.gid)};
    if (who.groups.empty()) {
        argv.push_back("--clear-groups");
    } else {
        std::string groups;
        for (gid_t group : who.groups) {
            groups += (groups.empty() ? "" : ",") + std::to_string(group);
        }
        argv.push_back("--groups=" + groups);
    }
    return argv;
}

// The messages in a maildir's new/.
std::vector<fs::path> new_mail(const std::string &maildir) {
    std::vector<fs::path> files;
    std::error_code error;
    for (const auto &entry : fs::directory_iterator(maildir + "/new", error)) {
        files.push_back(entry.path());
    }
    return files;
}

std::size_t count_lines_with(const std::string &text, const std::vector<std::string> &parts) {
    std::size_t count = 0;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        bool all = true;
        for (const auto &part : parts) {
            all = all && line.find(part) != std::string::npos;
        }
        count += all ? 1 : 0;
    }
    return count;
}

bool forbidden_without_rows(const std::vector<WireReply> &replies) {
    return replies.size() == 1 && replies[0].failed() && replies[0].fields[0] == "forbidden";
}

class E2eLeastPrivilege : public E2eTest {
protected:
    DovecotOptions system_user_options() const {
        DovecotOptions with_accounts = options();
        with_accounts.system_users = true;
        return with_accounts;
    }

    std::string maildir(const std::string &user) const { return dovecot_->dir() + "/mail/" + user; }

    // dovecot-lda -d <user> as `who`, the mail from a file; its exit status.
    int deliver_with_lda(const Identity &who, const std::string &user, const std::string &subject) {
        const std::string mail = dovecot_->dir() + "/lda-mail-" + subject + ".eml";
        write_file(mail,
                   make_test_message("sender@example.net", user + "@example.com", subject,
                                     "Delivered by the MTA through dovecot-lda.\n"),
                   0644);
        std::vector<std::string> argv = setpriv_as(who);
        argv.insert(argv.end(), {lda_binary, "-c", dovecot_->conf_path(), "-d", user, "-f",
                                 "sender@example.net", "-p", mail});
        return run_command(argv, dovecot_->dir() + "/lda.out");
    }

    // doveadm -c <conf> <args> as `who`, with the built doveadm module
    // bind-mounted over doveadm's fixed module directory in a private mount
    // namespace; its exit status, its output in `out`.
    int doveadm_as(const Identity &who, const std::vector<std::string> &args, std::string &out) {
        const std::string module_dir = dovecot_->dir() + "/doveadm-modules";
        if (!fs::exists(module_dir)) {
            make_directory(module_dir, 0755);
            fs::create_symlink(fs::absolute(XAPS_DOVEADM_MODULE_PATH),
                               fs::path(module_dir) /
                                   fs::path(XAPS_DOVEADM_MODULE_PATH).filename());
        }
        std::vector<std::string> argv = {"/usr/bin/unshare",
                                         "--mount",
                                         "/bin/sh",
                                         "-c",
                                         "mount --bind \"$0\" " + std::string(doveadm_module_dir) +
                                             " && exec \"$@\"",
                                         module_dir};
        if (who.uid != 0) {
            const std::vector<std::string> setpriv = setpriv_as(who);
            argv.insert(argv.end(), setpriv.begin(), setpriv.end());
        }
        argv.insert(argv.end(), {doveadm_binary, "-c", dovecot_->conf_path()});
        argv.insert(argv.end(), args.begin(), args.end());
        const std::string out_path = dovecot_->dir() + "/doveadm.out";
        ::unlink(out_path.c_str());
        const int status = run_command(argv, out_path);
        out = read_file(out_path);
        return status;
    }
};

// Neither listener admits a stranger (nobody), another mail user's uid
// without group dovecot, or the worker's own user; the admin listener admits
// no one but root, not even a mail process.
TEST_F(E2eLeastPrivilege, OnlyGroupDovecotReachesTheMailListenerAndOnlyRootTheAdminListener) {
    start_dovecot(system_user_options());
    const std::string mail = dovecot_->worker_socket_path();
    const std::string admin = dovecot_->admin_socket_path();
    const gid_t dovecot_gid = group_id("dovecot");

    struct stat mail_stat {};
    struct stat admin_stat {};
    ASSERT_EQ(::stat(mail.c_str(), &mail_stat), 0);
    ASSERT_EQ(::stat(admin.c_str(), &admin_stat), 0);
    EXPECT_EQ(mail_stat.st_mode & 07777, 0660u);
    EXPECT_EQ(mail_stat.st_uid, 0u);
    EXPECT_EQ(mail_stat.st_gid, dovecot_gid);
    EXPECT_EQ(admin_stat.st_mode & 07777, 0600u);
    EXPECT_EQ(admin_stat.st_uid, 0u);

    const std::vector<Identity> strangers = {
        nobody(),
        identity_of(dovecot_->account_of("bob")),
        identity_of(dovecot_->worker_user()),
    };
    for (const Identity &who : strangers) {
        SCOPED_TRACE(who.name);
        const int to_admin = connect_as(who, admin).error;
        EXPECT_EQ(to_admin, EACCES) << describe_errno(to_admin);
        const int to_mail = connect_as(who, mail).error;
        EXPECT_EQ(to_mail, EACCES) << describe_errno(to_mail);
    }

    const Identity mail_process = identity_of(dovecot_->account_of("alice"), {dovecot_gid});
    const int mail_to_admin = connect_as(mail_process, admin).error;
    EXPECT_EQ(mail_to_admin, EACCES) << describe_errno(mail_to_admin);
    const int mail_to_mail = connect_as(mail_process, mail).error;
    EXPECT_EQ(mail_to_mail, 0) << describe_errno(mail_to_mail);
}

// Whoever reaches the mail listener (here: vmail with group dovecot, as any
// mail process) gets FAIL for every admin command, and nothing is listed,
// removed or imported; the REGISTER sent after them on the same connection
// proves it was served all along.
TEST_F(E2eLeastPrivilege, AdminCommandsOnTheMailListenerFail) {
    start_dovecot(options());
    register_phone(*login("alice"), PhoneRegistration{});
    ASSERT_EQ(registrations("alice").size(), 1u);

    Connected connected = connect_as(identity_of(dovecot_->mail_user(), {group_id("dovecot")}),
                                     dovecot_->worker_socket_path());
    ASSERT_EQ(connected.error, 0) << describe_errno(connected.error);
    WorkerClient mail_peer(LineConnection::adopt(std::move(connected.socket)));

    const std::int64_t an_hour_ago = static_cast<std::int64_t>(std::time(nullptr)) - 3600;
    const Registration imported{"mallory",
                                "00000000-0000-4000-8000-000000000001",
                                device_token(7),
                                "com.apple.mobilemail",
                                2,
                                {"INBOX"},
                                an_hour_ago,
                                an_hour_ago};
    const std::vector<std::pair<std::string, std::vector<std::string>>> forbidden = {
        {"LIST", {"LIST"}},
        {"LIST alice", {"LIST", "alice"}},
        {"PURGE all", {"PURGE", "all"}},
        {"PURGE user alice", {"PURGE", "user", "alice"}},
        {"PURGE token", {"PURGE", "token", iphone_device_token}},
        {"STATUS", {"STATUS"}},
        {"TEST alice", {"TEST", "alice"}},
        {"IMPORT", import_request(imported)},
    };
    for (const auto &[name, request] : forbidden) {
        SCOPED_TRACE(name);
        const std::vector<WireReply> replies = mail_peer.request(request);
        EXPECT_TRUE(forbidden_without_rows(replies)) << describe(replies);
    }

    const Registration carol{"carol",
                             "00000000-0000-4000-8000-000000000002",
                             device_token(3),
                             "com.apple.mobilemail",
                             2,
                             {"INBOX"},
                             0,
                             0};
    const std::vector<WireReply> registered = mail_peer.request(register_request(carol));
    ASSERT_EQ(registered.size(), 1u) << describe(registered);
    EXPECT_TRUE(registered[0].ok()) << describe(registered);

    const std::vector<Registration> stored = registrations("");
    std::vector<std::string> stored_users;
    for (const auto &registration : stored) {
        stored_users.push_back(registration.user + " " + registration.device_token);
    }
    std::sort(stored_users.begin(), stored_users.end());
    EXPECT_EQ(stored_users, (std::vector<std::string>{"alice " + std::string(iphone_device_token),
                                                      "carol " + device_token(3)}));
}

// A row whose last_seen lies in the future would never expire and would win
// xaps_max_devices_per_user against the user's real phones: even root's
// IMPORT may not bring one in.
TEST_F(E2eLeastPrivilege, ImportRefusesAForgedFutureLastSeen) {
    start_dovecot(options());
    const std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
    WorkerClient admin(dovecot_->admin_socket_path());
    const Registration forged{"alice",
                              "00000000-0000-4000-8000-000000000009",
                              device_token(9),
                              "com.apple.mobilemail",
                              2,
                              {"INBOX"},
                              now - 3600,
                              now + 30 * 86400};
    const std::vector<WireReply> refused = admin.request(import_request(forged));
    ASSERT_EQ(refused.size(), 1u) << describe(refused);
    EXPECT_TRUE(refused[0].failed()) << describe(refused);

    Registration honest = forged;
    honest.device_token = device_token(8);
    honest.last_seen = now - 60;
    const std::vector<WireReply> imported = admin.request(import_request(honest));
    ASSERT_EQ(imported.size(), 1u) << describe(imported);
    EXPECT_EQ(imported[0].fields, std::vector<std::string>{"imported"}) << describe(imported);

    const std::vector<Registration> stored = registrations("alice");
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0].device_token, device_token(8));
}

// IMAP registers and LMTP notifies through the mail listener, whether every
// user's mail processes run as one virtual uid or each as its own system user.
class E2eMailProcesses : public E2eLeastPrivilege, public ::testing::WithParamInterface<bool> {};

TEST_P(E2eMailProcesses, RegisterAndNotify) {
    const bool system_users = GetParam();
    start_dovecot(system_users ? system_user_options() : options());
    register_phone(*login("alice"), PhoneRegistration{});
    std::vector<Registration> stored = registrations("alice");
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0].device_token, iphone_device_token);

    ASSERT_EQ(deliver_to("alice@example.com").code, 250);
    ASSERT_TRUE(apns_->wait_for_requests(1, push_timeout)) << dovecot_->log();
    EXPECT_EQ(apns_->requests().at(0).device_token, iphone_device_token);

    // The delivery ran as the user's own uid (or vmail's).
    const std::vector<fs::path> mails = new_mail(maildir("alice"));
    ASSERT_EQ(mails.size(), 1u);
    struct stat mail_stat {};
    ASSERT_EQ(::stat(mails[0].c_str(), &mail_stat), 0);
    const SystemUser &expected =
        system_users ? dovecot_->account_of("alice") : dovecot_->mail_user();
    EXPECT_EQ(mail_stat.st_uid, expected.uid) << expected.name;
    if (system_users) {
        EXPECT_NE(expected.uid, dovecot_->mail_user().uid);
    }
}

INSTANTIATE_TEST_SUITE_P(Users, E2eMailProcesses, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool> &info) {
                             return info.param ? std::string("SystemUsers")
                                               : std::string("OneVirtualMailUid");
                         });

// The documented LDA setup: the user the MTA runs dovecot-lda as is in group
// dovecot, so its NOTIFY reaches the worker and the phone gets a push.
TEST_F(E2eLeastPrivilege, LdaWithGroupDovecotPushes) {
    start_dovecot(options());
    register_phone(*login("alice"), PhoneRegistration{});

    const Identity mta = identity_of(dovecot_->mail_user(), {group_id("dovecot")});
    ASSERT_EQ(deliver_with_lda(mta, "alice", "lda-with-group"), 0)
        << read_file(dovecot_->dir() + "/lda.out") << read_file(dovecot_->lda_log_path());
    EXPECT_EQ(new_mail(maildir("alice")).size(), 1u);
    ASSERT_TRUE(apns_->wait_for_requests(1, push_timeout))
        << read_file(dovecot_->lda_log_path()) << dovecot_->log();
    EXPECT_EQ(apns_->requests().at(0).device_token, iphone_device_token);
}

// Without group dovecot the worker refuses the LDA's connection: mail is still
// delivered, every time, and the log says so once (not once per mail).
TEST_F(E2eLeastPrivilege, LdaWithoutGroupDeliversAndWarnsOnce) {
    start_dovecot(options());
    register_phone(*login("alice"), PhoneRegistration{});

    const Identity mta = identity_of(dovecot_->mail_user());
    for (const char *subject : {"lda-first", "lda-second"}) {
        ASSERT_EQ(deliver_with_lda(mta, "alice", subject), 0)
            << read_file(dovecot_->dir() + "/lda.out") << read_file(dovecot_->lda_log_path());
    }
    EXPECT_EQ(new_mail(maildir("alice")).size(), 2u);
    const std::string lda_log = read_file(dovecot_->lda_log_path());
    // Both deliveries logged (the positive marker that the log is complete)...
    EXPECT_EQ(count_lines_with(lda_log, {"saved mail to INBOX"}), 2u) << lda_log;
    // ...and one warning naming the refused socket and the remedy, none worse.
    EXPECT_EQ(count_lines_with(lda_log, {"Warning:", dovecot_->worker_socket_path()}), 1u)
        << lda_log;
    EXPECT_EQ(count_lines_with(lda_log, {"Warning:", "group dovecot"}), 1u) << lda_log;
    EXPECT_EQ(count_lines_with(lda_log, {"Error:"}), 0u) << lda_log;
    EXPECT_EQ(count_lines_with(lda_log, {"Fatal:"}), 0u) << lda_log;
}

// doveadm xaps, run by root, reaches the admin listener; run by a mail
// process's identity it is refused.
TEST_F(E2eLeastPrivilege, DoveadmAdministersAsRootOnly) {
    start_dovecot(options());
    register_phone(*login("alice"), PhoneRegistration{});

    const Identity root{"root", 0, 0, {}};
    std::string out;
    ASSERT_EQ(doveadm_as(root, {"xaps", "list"}, out), 0) << out;
    EXPECT_NE(out.find(iphone_device_token), std::string::npos) << out;
    ASSERT_EQ(doveadm_as(root, {"xaps", "status"}, out), 0) << out;
    EXPECT_FALSE(out.empty());

    const Identity mail_process = identity_of(dovecot_->mail_user(), {group_id("dovecot")});
    EXPECT_NE(doveadm_as(mail_process, {"xaps", "list"}, out), 0) << out;
    EXPECT_EQ(out.find(iphone_device_token), std::string::npos) << out;
    EXPECT_NE(out.find(dovecot_->admin_socket_path()), std::string::npos) << out;
    EXPECT_NE(out.find(std::strerror(EACCES)), std::string::npos) << out;
}

// The worker runs as its own user but is not dumpable: the kernel makes its
// /proc files root's, and that user can neither read its memory nor trace it.
TEST_F(E2eLeastPrivilege, WorkerIsNotDumpable) {
    start_dovecot(options());
    const pid_t worker = worker_pid(*dovecot_);
    ASSERT_GT(worker, 0);
    const SystemUser &xaps = dovecot_->worker_user();
    ASSERT_NE(xaps.uid, 0u);
    EXPECT_EQ(process_status_numbers(worker, "Uid"),
              (std::vector<long>{long(xaps.uid), long(xaps.uid), long(xaps.uid), long(xaps.uid)}));

    struct stat status_stat {};
    ASSERT_EQ(::stat(("/proc/" + std::to_string(worker) + "/status").c_str(), &status_stat), 0);
    EXPECT_EQ(status_stat.st_uid, 0u);
    const int traced = ptrace_errno_as(identity_of(xaps), worker);
    EXPECT_EQ(traced, EPERM) << describe_errno(traced);
}

// The worker reads the APNs key while root; a key its own user can read is
// one anybody who becomes that user can copy, and the admin hears of it.
TEST_F(E2eLeastPrivilege, AKeyTheWorkersUserCanReadIsReported) {
    start_dovecot(options());
    const std::string warning = "holds the APNs private key and the worker's own user can read it";
    const std::string key = dovecot_->dir() + "/apns/client.key";
    const SystemUser &xaps = dovecot_->worker_user();
    ASSERT_EQ(::chown(key.c_str(), xaps.uid, xaps.gid), 0);

    // The master starts a new worker, which reads the key as root again.
    const pid_t worker = worker_pid(*dovecot_);
    ASSERT_GT(worker, 0);
    expected_log_lines_.push_back("child " + std::to_string(worker) + " killed with signal 9");
    ASSERT_EQ(::kill(worker, SIGKILL), 0);
    ASSERT_TRUE(dovecot_->wait_for_log(warning, command_time_limit)) << dovecot_->log();

    // The first worker, which found the key root's, said nothing of it.
    const std::string log = dovecot_->log();
    std::size_t said = 0;
    for (auto at = log.find(warning); at != std::string::npos; at = log.find(warning, at + 1)) {
        said++;
    }
    EXPECT_EQ(said, 1u) << log;
    EXPECT_NE(log.find(key + " holds the APNs private key"), std::string::npos) << log;
}

} // namespace
