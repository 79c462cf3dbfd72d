// End to end, Dovecot's own lifecycle with phones connected: a reload
// (`doveadm reload`, or SIGHUP to the master as `systemctl reload` sends it)
// while an IMAP session that registered idles and the worker is connected,
// and a stop and start of the same instance (same directory, same store).
// The promises checked: registrations are kept, pushes continue, new
// registrations are stored, and no worker of an older configuration or an
// older master is left running.
//
// dovecot-lda in the shipped configuration, run as the mail user with group
// dovecot, is covered by test-e2e-least-privilege (LdaWithGroupDovecotPushes).
#include "e2e-fixture.h"
#include "e2e-processes.h"
#include "eventually.h"
#include "test-files.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

namespace {

using namespace xaps::test;
using namespace xaps::test::e2e;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Bounds a wait for something that must happen: generous, for a loaded
// two-core machine running sanitizers; a healthy run needs a fraction of it.
constexpr auto condition_deadline = 30s;

constexpr const char *doveadm_binary = "/usr/bin/doveadm";

std::string pid_list(const std::vector<pid_t> &pids) {
    std::string text;
    for (pid_t pid : pids) {
        text += (text.empty() ? "" : " ") + std::to_string(pid);
    }
    return "[" + text + "]";
}

std::vector<std::string> stored_tokens(const std::vector<xaps::Registration> &registrations) {
    std::vector<std::string> tokens;
    for (const auto &registration : registrations) {
        tokens.push_back(registration.device_token);
    }
    std::sort(tokens.begin(), tokens.end());
    return tokens;
}

enum class ReloadBy { doveadm, sighup };

class E2eReload : public E2eTest, public ::testing::WithParamInterface<ReloadBy> {
protected:
    // Runs `doveadm -c <conf> reload` as root, as an admin would; its exit
    // status (-1 when it did not exit normally).
    int doveadm_reload() {
        const std::string out = dovecot_->dir() + "/doveadm-reload.out";
        const pid_t pid =
            spawn_process({doveadm_binary, "-c", dovecot_->conf_path(), "reload"}, out, out);
        int status = 0;
        if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
            return -1;
        }
        return WEXITSTATUS(status);
    }

    void reload() {
        if (GetParam() == ReloadBy::doveadm) {
            ASSERT_EQ(doveadm_reload(), 0) << read_file(dovecot_->dir() + "/doveadm-reload.out");
        } else {
            ASSERT_EQ(::kill(dovecot_->master_pid(), SIGHUP), 0);
        }
    }

    // Starts IDLE on a session and reads the server's continuation.
    void start_idle(ImapClient &imap) {
        imap.send_raw("idle1 IDLE\r\n");
        const std::string continuation = imap.read_line();
        ASSERT_TRUE(continuation.starts_with("+")) << continuation;
    }

    // Reads the idling session's untagged lines until one ends in `suffix`.
    bool idle_reports(ImapClient &imap, const std::string &suffix) {
        imap.set_timeout(condition_deadline);
        for (;;) {
            const std::string line = imap.read_line();
            if (line.ends_with(suffix)) {
                return true;
            }
            if (!line.starts_with("* ")) {
                ADD_FAILURE() << "unexpected line while idling: " << line;
                return false;
            }
        }
    }

    void end_idle(ImapClient &imap) {
        imap.send_raw("DONE\r\n");
        const ImapResponse done = imap.read_response("idle1");
        EXPECT_TRUE(done.ok()) << joined(done.lines());
    }
};

// The worker is connected (alice's session registered through it) and alice
// idles when Dovecot reloads. Afterwards the idling session still hears of
// new mail, the phone is still pushed, a new session registers a second
// device, and the worker of the old configuration is gone.
TEST_P(E2eReload, RegistrationsAndPushesSurviveReload) {
    start_dovecot(options());
    const pid_t old_worker = worker_pid(*dovecot_);
    ASSERT_GT(old_worker, 0);

    std::unique_ptr<ImapClient> idling = login("alice");
    register_phone(*idling, PhoneRegistration{});
    ASSERT_TRUE(idling->command("SELECT INBOX").ok());
    start_idle(*idling);

    reload();
    // The master starts a worker with the reloaded configuration; wait for
    // it to serve before mail arrives, so that the push below goes through
    // the new one.
    const pid_t new_worker = wait_for_serving_worker(*dovecot_, old_worker, condition_deadline);
    ASSERT_GT(new_worker, 0) << dovecot_->log();

    EXPECT_EQ(stored_tokens(registrations("alice")), std::vector<std::string>{iphone_device_token});

    SmtpReply delivery = deliver_to("alice@example.com", "After the reload");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns_->wait_for_requests(1, condition_deadline)) << dovecot_->log();
    EXPECT_EQ(apns_->requests().at(0).device_token, iphone_device_token);
    EXPECT_EQ(pushed_account_id(apns_->requests().at(0)), iphone_account_id);
    EXPECT_TRUE(idle_reports(*idling, " EXISTS")) << "the session of the old configuration lives";
    end_idle(*idling);

    // The session of the old configuration still reaches a worker: what it
    // appends pushes too.
    const std::string appended = make_test_message("alice@example.com", "alice@example.com",
                                                   "Appended after the reload", "A draft.\n");
    idling->send_raw("append1 APPEND INBOX {" + std::to_string(appended.size()) + "+}\r\n" +
                     appended + "\r\n");
    const ImapResponse append = idling->read_response("append1");
    EXPECT_TRUE(append.ok()) << joined(append.lines());
    ASSERT_TRUE(apns_->wait_for_requests(2, condition_deadline)) << dovecot_->log();
    EXPECT_EQ(apns_->requests().at(1).device_token, iphone_device_token);

    PhoneRegistration second_phone;
    second_phone.account_id = "5F1C9A2E-8B3D-4E6F-A170-2B4C6D8E0F13";
    second_phone.device_token = device_token(2);
    register_phone(*login("alice"), second_phone);
    std::vector<std::string> both{iphone_device_token, device_token(2)};
    std::sort(both.begin(), both.end());
    EXPECT_EQ(stored_tokens(registrations("alice")), both);

    std::vector<pid_t> workers;
    EXPECT_TRUE(eventually(
        [&] {
            workers = worker_pids(*dovecot_);
            return workers.size() == 1;
        },
        condition_deadline))
        << "xaps-worker processes of the master: " << pid_list(workers) << "\n"
        << dovecot_->log();
    EXPECT_EQ(workers, std::vector<pid_t>{new_worker});
    EXPECT_FALSE(runs_worker(old_worker)) << "the worker of the old configuration still runs";
}

INSTANTIATE_TEST_SUITE_P(By, E2eReload, ::testing::Values(ReloadBy::doveadm, ReloadBy::sighup),
                         [](const ::testing::TestParamInfo<ReloadBy> &info) {
                             return info.param == ReloadBy::doveadm ? std::string("DoveadmReload")
                                                                    : std::string("Sighup");
                         });

using E2eRestart = E2eTest;

// Dovecot stopped and started again on the same instance: the store is
// kept, the new worker pushes, and the old master left no worker behind.
TEST_F(E2eRestart, RegistrationsAndPushesSurviveRestart) {
    start_dovecot(options());
    register_phone(*login("alice"), PhoneRegistration{});
    const pid_t old_worker = worker_pid(*dovecot_);
    ASSERT_GT(old_worker, 0);

    dovecot_->stop();
    // stop() returns once the master exited; its worker must not outlive it.
    EXPECT_TRUE(eventually([&] { return !runs_worker(old_worker); }, condition_deadline))
        << "the old master's worker " << old_worker << " still runs";
    dovecot_->start();
    const pid_t new_worker = worker_pid(*dovecot_);
    ASSERT_GT(new_worker, 0) << dovecot_->log();
    EXPECT_NE(new_worker, old_worker);

    EXPECT_EQ(stored_tokens(registrations("alice")), std::vector<std::string>{iphone_device_token});
    SmtpReply delivery = deliver_to("alice@example.com", "After the restart");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(apns_->wait_for_requests(1, condition_deadline)) << dovecot_->log();
    EXPECT_EQ(apns_->requests().at(0).device_token, iphone_device_token);
    EXPECT_EQ(worker_pids(*dovecot_), std::vector<pid_t>{new_worker});
}

} // namespace
