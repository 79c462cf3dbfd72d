#include "push-scheduler.h"
#include "sample-registration.h"
#include "temporary-directory.h"
#include "xaps-error.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>

namespace {

using xaps::test::TemporaryDirectory;

using namespace std::chrono_literals;
using xaps::Push;
using xaps::PushOutcome;
using xaps::Registration;

// Timers only, fired in due order when the test advances the clock.
class ManualEventLoop final : public xaps::EventLoop {
public:
    std::unique_ptr<Watch> watch_fd(int, IoDirection, Callback) override {
        throw std::logic_error("the scheduler watches no fd");
    }

    std::unique_ptr<Watch> call_after(std::chrono::milliseconds delay, Callback callback) override {
        std::uint64_t id = ++next_id_;
        timers_.emplace(id, Timer{now_ + delay, std::move(callback)});
        return std::make_unique<TimerWatch>(*this, id);
    }

    std::chrono::steady_clock::time_point now() const override { return now_; }

    // Fires every timer due up to now + by, in due order, then sets the clock.
    void advance(std::chrono::milliseconds by) {
        auto target = now_ + by;
        for (;;) {
            auto next =
                std::min_element(timers_.begin(), timers_.end(), [](const auto &a, const auto &b) {
                    return std::pair(a.second.due, a.first) < std::pair(b.second.due, b.first);
                });
            if (next == timers_.end() || next->second.due > target) {
                break;
            }
            now_ = next->second.due;
            Callback callback = std::move(next->second.callback);
            timers_.erase(next);
            callback();
        }
        now_ = target;
    }

    std::size_t timers() const { return timers_.size(); }

private:
    struct Timer {
        std::chrono::steady_clock::time_point due;
        Callback callback;
    };
    class TimerWatch final : public Watch {
    public:
        TimerWatch(ManualEventLoop &loop, std::uint64_t id) : loop_(loop), id_(id) {}
        ~TimerWatch() override { loop_.timers_.erase(id_); }

    private:
        ManualEventLoop &loop_;
        std::uint64_t id_;
    };

    std::chrono::steady_clock::time_point now_{};
    std::uint64_t next_id_ = 0;
    std::map<std::uint64_t, Timer> timers_;
};

// Records pushes; the test answers them.
class RecordingSender final : public xaps::PushSender {
public:
    void send(const Push &push, Done done) override {
        if (fail_next_send) {
            fail_next_send = false;
            throw xaps::Error(xaps::ErrorKind::unavailable, "sender refuses");
        }
        sent.push_back({push, std::move(done)});
    }

    void answer(std::size_t index, const PushOutcome &outcome) {
        ASSERT_LT(index, sent.size());
        ASSERT_TRUE(sent[index].done) << "answered twice";
        auto done = std::move(sent[index].done);
        sent[index].done = nullptr;
        done(outcome); // may send again, which may grow `sent`
    }

    std::size_t unanswered() const {
        return static_cast<std::size_t>(
            std::count_if(sent.begin(), sent.end(), [](const auto &s) { return bool(s.done); }));
    }

    std::vector<std::string> tokens() const {
        std::vector<std::string> tokens;
        for (const auto &s : sent) {
            tokens.push_back(s.push.device_token);
        }
        return tokens;
    }

    struct Sent {
        Push push;
        Done done;
    };
    std::vector<Sent> sent;
    bool fail_next_send = false;
};

PushOutcome delivered() {
    PushOutcome outcome;
    outcome.result = PushOutcome::Result::delivered;
    outcome.http_status = 200;
    return outcome;
}

PushOutcome failed() {
    PushOutcome outcome;
    outcome.result = PushOutcome::Result::failed;
    outcome.reason = "unreachable";
    return outcome;
}

PushOutcome gone(std::optional<std::int64_t> unregistered_at_ms) {
    PushOutcome outcome;
    outcome.result = PushOutcome::Result::device_gone;
    outcome.http_status = unregistered_at_ms ? 410 : 400;
    outcome.reason = unregistered_at_ms ? "Unregistered" : "BadDeviceToken";
    outcome.unregistered_at_ms = unregistered_at_ms;
    return outcome;
}

Registration make_registration(std::string user, std::string account_id, std::string token,
                               unsigned aps_version = 2,
                               std::vector<std::string> mailboxes = {"INBOX"}) {
    Registration registration = xaps::test::sample_registration(
        std::move(user), std::move(account_id), std::move(token), std::move(mailboxes));
    registration.aps_version = aps_version;
    return registration;
}

const std::vector<std::string> new_mail{"MessageNew"};
const std::vector<std::string> flags_set{"FlagsSet"};

// A real LMDB store, a manual loop, a recording sender, unix time 1000.
class SchedulerFixture {
public:
    explicit SchedulerFixture(xaps::PushSchedulerSettings settings =
                                  xaps::PushSchedulerSettings::from(xaps::default_xaps_settings()))
        : store(xaps::open_lmdb_store([this] {
              auto options = xaps::LmdbStoreOptions::from(xaps::default_xaps_settings());
              options.path = dir.path();
              return options;
          }())),
          scheduler(loop, *store, sender, settings, [this] { return unix_now; }) {}

    TemporaryDirectory dir{"xaps-sched-", TemporaryDirectory::disk_base()};
    std::int64_t unix_now = 1000;
    ManualEventLoop loop;
    std::unique_ptr<xaps::RegistrationStore> store;
    RecordingSender sender;
    xaps::PushScheduler scheduler;
};

class PushSchedulerTest : public ::testing::Test {
protected:
    SchedulerFixture f;
};

TEST(PushSchedulerMailboxes, PushesOnlyRegistrationsThatWantTheMailbox) {
    struct Row {
        unsigned aps_version;
        std::vector<std::string> mailboxes;
        std::string mailbox;
        bool pushed;
    };
    const Row rows[] = {
        {1, {}, "INBOX", true},
        {1, {}, "inbox", true},
        {1, {"Archive"}, "Archive", false}, // version 1 is INBOX only
        {2, {"INBOX", "Sent Messages"}, "Sent Messages", true},
        {2, {"INBOX"}, "Inbox", true},
        {2, {"inbox"}, "INBOX", true},
        {2, {"Sent Messages"}, "sent messages", false}, // other names exactly
        {2, {"Sent Messages"}, "INBOX", false},
        {2, {}, "INBOX", false},
        {2, {"INBOX/Sub"}, "INBOX", false},
        {2, {"\u00dcbersicht"}, "\u00dcbersicht", true},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE("v" + std::to_string(row.aps_version) + " " + row.mailbox);
        SchedulerFixture f;
        f.store->put(make_registration("alice", "acct", "tok", row.aps_version, row.mailboxes),
                     f.unix_now);
        f.scheduler.notify("alice", row.mailbox, new_mail);
        f.loop.advance(1h);
        EXPECT_EQ(f.sender.sent.size(), row.pushed ? 1u : 0u);
        EXPECT_EQ(f.scheduler.counters().notifies, 1u);
    }
}

TEST(PushSchedulerTiming, NewMailPushesNowOtherEventsAfterTheDelay) {
    struct Row {
        std::vector<std::string> events;
        bool now;
    };
    const Row rows[] = {
        {{"MessageNew"}, true},
        {{"MessageAppend"}, true},
        {{"FlagsSet"}, false},
        {{"FlagsClear"}, false},
        {{"MessageExpunge"}, false},
        {{"MailboxRename"}, false},
        {{"MailboxDelete"}, false},
        {{"MessageRead"}, false},
        {{"SomethingNew"}, false},
        {{"FlagsSet", "MessageNew"}, true},
        {{"MessageExpunge", "MessageAppend", "FlagsClear"}, true},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.events.front() + (row.events.size() > 1 ? "..." : ""));
        SchedulerFixture f({.delay = 30s, .max_pending = 10});
        f.store->put(make_registration("alice", "acct", "tok"), f.unix_now);
        f.scheduler.notify("alice", "INBOX", row.events);
        EXPECT_EQ(f.sender.sent.size(), row.now ? 1u : 0u);
        EXPECT_EQ(f.scheduler.counters().pending, row.now ? 0u : 1u);
        f.loop.advance(29999ms);
        EXPECT_EQ(f.sender.sent.size(), row.now ? 1u : 0u);
        f.loop.advance(1ms);
        ASSERT_EQ(f.sender.sent.size(), 1u);
        EXPECT_EQ(f.sender.sent[0].push.device_token, "tok");
        EXPECT_EQ(f.sender.sent[0].push.account_id, "acct");
        EXPECT_EQ(f.scheduler.counters().pending, 0u);
        EXPECT_EQ(f.scheduler.counters().in_flight, 1u);
    }
}

TEST_F(PushSchedulerTest, DelayedEventsCoalescePerDeviceWithoutPostponing) {
    f.store->put(make_registration("alice", "acct", "phone"), f.unix_now);
    f.store->put(make_registration("alice", "acct", "clone"), f.unix_now);
    f.scheduler.notify("alice", "INBOX", flags_set);
    f.loop.advance(10s);
    f.scheduler.notify("alice", "INBOX", flags_set);
    f.loop.advance(10s);
    f.scheduler.notify("alice", "INBOX", std::vector<std::string>{"MessageExpunge"});
    EXPECT_TRUE(f.sender.sent.empty());
    f.loop.advance(10s);                 // 30 s after the first event
    EXPECT_EQ(f.sender.sent.size(), 2u); // one per device (a cloned phone is a second device)
    f.loop.advance(1h);
    EXPECT_EQ(f.sender.sent.size(), 2u);
    EXPECT_EQ(f.scheduler.counters().coalesced, 4u);
    EXPECT_EQ(f.scheduler.counters().pushes_sent, 2u);
}

TEST_F(PushSchedulerTest, NewMailAbsorbsAPendingDelayedPush) {
    f.store->put(make_registration("alice", "acct", "tok"), f.unix_now);
    f.scheduler.notify("alice", "INBOX", flags_set);
    f.loop.advance(5s);
    f.scheduler.notify("alice", "INBOX", new_mail);
    EXPECT_EQ(f.sender.sent.size(), 1u);
    EXPECT_EQ(f.scheduler.counters().pending, 0u);
    EXPECT_EQ(f.loop.timers(), 0u);
    f.sender.answer(0, delivered());
    f.loop.advance(1h);
    EXPECT_EQ(f.sender.sent.size(), 1u);
    EXPECT_EQ(f.scheduler.counters().pushes_delivered, 1u);
    EXPECT_EQ(f.scheduler.counters().in_flight, 0u);
}

TEST_F(PushSchedulerTest, EventsDuringAPushInFlightCauseExactlyOneMore) {
    struct Row {
        std::string what;
        std::vector<std::vector<std::string>> during_flight;
        bool follow_up_now; // else after the delay
    };
    const Row rows[] = {
        {"new mail", {new_mail, new_mail, new_mail}, true},
        {"flags only", {flags_set, flags_set}, false},
        {"flags then new mail", {flags_set, new_mail}, true},
        {"new mail then flags", {new_mail, flags_set}, true},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        SchedulerFixture f({.delay = 30s, .max_pending = 10});
        f.store->put(make_registration("alice", "acct", "tok"), f.unix_now);
        f.scheduler.notify("alice", "INBOX", new_mail);
        ASSERT_EQ(f.sender.sent.size(), 1u);
        for (const auto &events : row.during_flight) {
            f.scheduler.notify("alice", "INBOX", events);
            f.loop.advance(40s); // no timer runs for an in-flight device
        }
        EXPECT_EQ(f.sender.sent.size(), 1u);
        EXPECT_EQ(f.scheduler.counters().coalesced, row.during_flight.size());

        f.sender.answer(0, delivered());
        EXPECT_EQ(f.sender.sent.size(), row.follow_up_now ? 2u : 1u);
        f.loop.advance(30s);
        ASSERT_EQ(f.sender.sent.size(), 2u);
        f.sender.answer(1, delivered());
        f.loop.advance(1h);
        EXPECT_EQ(f.sender.sent.size(), 2u);
        auto counters = f.scheduler.counters();
        EXPECT_EQ(counters.pushes_delivered, 2u);
        EXPECT_EQ(counters.in_flight, 0u);
        EXPECT_EQ(counters.pending, 0u);
    }
}

TEST_F(PushSchedulerTest, AFailedPushEndsTheDeviceStateSoTheNextEventPushes) {
    f.store->put(make_registration("alice", "acct", "tok"), f.unix_now);
    f.scheduler.notify("alice", "INBOX", new_mail);
    f.sender.answer(0, failed());
    f.scheduler.notify("alice", "INBOX", new_mail);
    EXPECT_EQ(f.sender.sent.size(), 2u);
    EXPECT_EQ(f.scheduler.counters().pushes_failed, 1u);
    EXPECT_EQ(f.store->size(), 1u);
}

TEST_F(PushSchedulerTest, OnlyTheNotifiedUsersUnexpiredDevicesArePushed) {
    f.store->put(make_registration("alice", "acct", "alice-phone"), f.unix_now);
    f.store->put(make_registration("Bob", "acct-b", "bob-phone"), f.unix_now);
    f.store->put(make_registration("alice", "acct", "stale"), f.unix_now - 31 * 24 * 3600);
    f.scheduler.notify("ALICE", "INBOX", new_mail);
    EXPECT_EQ(f.sender.tokens(), std::vector<std::string>{"alice-phone"});
    f.scheduler.notify("nobody", "INBOX", new_mail);
    EXPECT_EQ(f.sender.sent.size(), 1u);
}

TEST(PushSchedulerGone, GoneDevicesAreRemovedUnlessSeenSince) {
    struct Row {
        std::string what;
        PushOutcome outcome;
        std::size_t removed; // alice's "tok" was last seen at 1000, bob's "tok" at 900
        bool alice_keeps_tok;
    };
    const Row rows[] = {
        {"410 after the last registration", gone(1500 * 1000), 2, false},
        {"410 in the same second", gone(1000 * 1000 + 999), 2, false},
        {"410 before alice re-registered", gone(999 * 1000 + 999), 1, true},
        {"410 before both", gone(800 * 1000), 0, true},
        {"400 without timestamp", gone(std::nullopt), 2, false},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        SchedulerFixture f;
        // A user's devices are pushed in the order they first registered.
        f.store->put(make_registration("alice", "acct", "other"), 1000);
        f.store->put(make_registration("alice", "acct", "tok"), 1000);
        f.store->put(make_registration("bob", "acct-b", "tok"), 900); // same token elsewhere
        f.scheduler.notify("alice", "INBOX", new_mail);
        ASSERT_EQ(f.sender.tokens(), (std::vector<std::string>{"other", "tok"}));
        f.scheduler.notify("alice", "INBOX", new_mail); // both devices now dirty
        f.sender.answer(1, row.outcome);
        EXPECT_EQ(f.store->size(), 3u); // removals wait for their batch
        EXPECT_EQ(f.scheduler.counters().removals_pending, 1u);
        f.loop.advance(xaps::PushSchedulerSettings{}.removal_delay);

        auto counters = f.scheduler.counters();
        EXPECT_EQ(counters.devices_removed, row.removed);
        EXPECT_EQ(counters.removals_pending, 0u);
        EXPECT_EQ(f.store->size(), 3 - row.removed);
        auto alice = f.store->find_user("alice", 1000);
        EXPECT_EQ(alice.size(), row.alice_keeps_tok ? 2u : 1u);
        EXPECT_EQ(counters.pushes_failed, 1u);
        EXPECT_EQ(f.sender.sent.size(), 2u); // no follow-up for a gone device
        EXPECT_EQ(counters.in_flight, 1u);
        f.scheduler.notify("alice", "INBOX", new_mail);
        EXPECT_EQ(f.sender.sent.size(), row.alice_keeps_tok ? 3u : 2u);
    }
}

TEST_F(PushSchedulerTest, ARejectedPushStillGetsItsFollowUp) {
    f.store->put(make_registration("alice", "acct", "tok"), f.unix_now);
    f.scheduler.notify("alice", "INBOX", new_mail);
    f.scheduler.notify("alice", "INBOX", new_mail);
    PushOutcome rejected;
    rejected.result = PushOutcome::Result::rejected;
    rejected.http_status = 403;
    f.sender.answer(0, rejected);
    EXPECT_EQ(f.sender.sent.size(), 2u);
    EXPECT_EQ(f.store->size(), 1u);
    EXPECT_EQ(f.scheduler.counters().devices_removed, 0u);
}

TEST(PushSchedulerBounds, DevicesBeyondMaxPendingAreDroppedAndCounted) {
    SchedulerFixture f({.delay = 30s, .max_pending = 2});
    for (const char *token : {"t1", "t2", "t3"}) {
        f.store->put(make_registration("alice", "acct", token), f.unix_now);
    }
    f.scheduler.notify("alice", "INBOX", flags_set);
    auto counters = f.scheduler.counters();
    EXPECT_EQ(counters.pending, 2u);
    EXPECT_EQ(counters.dropped, 1u);
    // A tracked device still coalesces while the map is full.
    f.scheduler.notify("alice", "INBOX", new_mail);
    EXPECT_EQ(f.sender.sent.size(), 2u);
    EXPECT_EQ(f.scheduler.counters().dropped, 2u);
    f.sender.answer(0, delivered());
    f.sender.answer(1, delivered());
    f.scheduler.notify("alice", "INBOX", new_mail);
    EXPECT_EQ(f.sender.sent.size(), 4u);
    EXPECT_EQ(f.scheduler.counters().dropped, 3u);
}

TEST_F(PushSchedulerTest, TestPushesEveryDeviceAndReportsEachOutcome) {
    f.store->put(make_registration("alice", "acct", "t1", 2, {"Archive"}), f.unix_now);
    f.store->put(make_registration("alice", "acct", "t2"), f.unix_now);
    f.store->put(make_registration("bob", "acct", "b1"), f.unix_now);
    std::optional<std::vector<std::pair<Registration, PushOutcome>>> report;
    f.scheduler.test("Alice", [&](auto results) { report = std::move(results); });
    ASSERT_EQ(f.sender.tokens(), (std::vector<std::string>{"t1", "t2"}));
    f.sender.answer(1, gone(std::nullopt));
    EXPECT_FALSE(report);
    f.sender.answer(0, delivered());
    ASSERT_TRUE(report);
    ASSERT_EQ(report->size(), 2u);
    EXPECT_EQ((*report)[0].first.device_token, "t1");
    EXPECT_EQ((*report)[0].second.http_status, 200);
    EXPECT_EQ((*report)[1].first.device_token, "t2");
    EXPECT_EQ((*report)[1].second.reason, "BadDeviceToken");
    EXPECT_EQ(f.store->size(), 2u); // t2 was removed
    auto counters = f.scheduler.counters();
    EXPECT_EQ(counters.pushes_sent, 2u);
    EXPECT_EQ(counters.in_flight, 0u);
    EXPECT_EQ(counters.devices_removed, 1u);
}

TEST_F(PushSchedulerTest, TestOfAUserWithoutDevicesReportsLater) {
    bool called = false;
    f.scheduler.test("nobody", [&](auto results) {
        called = true;
        EXPECT_TRUE(results.empty());
    });
    EXPECT_FALSE(called);
    f.loop.advance(0ms);
    EXPECT_TRUE(called);
}

TEST_F(PushSchedulerTest, ASenderThatThrowsIsCountedNotPropagated) {
    std::vector<std::string> errors;
    f.scheduler.set_error_log([&](std::string_view message) { errors.emplace_back(message); });
    f.store->put(make_registration("alice", "acct", "tok"), f.unix_now);
    f.sender.fail_next_send = true;
    f.scheduler.notify("alice", "INBOX", new_mail);
    EXPECT_EQ(errors.size(), 1u);
    EXPECT_EQ(f.scheduler.counters().in_flight, 0u);
    f.scheduler.notify("alice", "INBOX", new_mail); // the device is not stuck
    EXPECT_EQ(f.sender.sent.size(), 1u);

    // Also from a timer: nothing escapes the event loop callback.
    f.sender.answer(0, delivered());
    f.scheduler.notify("alice", "INBOX", flags_set);
    f.sender.fail_next_send = true;
    EXPECT_NO_THROW(f.loop.advance(30s));
    EXPECT_EQ(errors.size(), 2u);
    EXPECT_EQ(f.scheduler.counters().errors, 2u);
    EXPECT_EQ(f.scheduler.counters().pending, 0u);
}

TEST_F(PushSchedulerTest, AnswersAfterTheSchedulerIsGoneAreIgnored) {
    ManualEventLoop loop;
    RecordingSender sender;
    {
        xaps::PushScheduler scheduler(loop, *f.store, sender, {}, [] { return 1000; });
        f.store->put(make_registration("alice", "acct", "tok"), 1000);
        scheduler.notify("alice", "INBOX", new_mail);
        scheduler.notify("alice", "INBOX", flags_set);
    }
    sender.answer(0, gone(std::nullopt));
    EXPECT_EQ(f.store->size(), 1u);
    EXPECT_EQ(loop.timers(), 0u);
}

// A store whose removals fail, to show that a store error while handling an
// answer stays inside the scheduler.
class FailingRemovalStore final : public xaps::RegistrationStore {
public:
    explicit FailingRemovalStore(xaps::RegistrationStore &inner) : inner_(inner) {}
    void put(const Registration &r, std::int64_t now) override { inner_.put(r, now); }
    bool import(const Registration &r) override { return inner_.import(r); }
    std::vector<Registration> find_user(std::string_view user, std::int64_t now) override {
        return inner_.find_user(user, now);
    }
    std::vector<Registration> all() override { return inner_.all(); }
    Page page_after(std::string_view user, std::string_view after, std::size_t max_rows,
                    std::int64_t now) override {
        return inner_.page_after(user, after, max_rows, now);
    }
    std::size_t size() override { return inner_.size(); }
    std::size_t remove_user(std::string_view) override { fail(); }
    std::size_t remove_token(std::string_view) override { fail(); }
    std::size_t remove_all() override { fail(); }
    std::size_t remove_token_unless_seen_since(std::string_view, std::int64_t) override { fail(); }
    std::size_t expire(std::int64_t) override { fail(); }

private:
    [[noreturn]] static void fail() { throw xaps::Error(xaps::ErrorKind::unavailable, "disk"); }
    xaps::RegistrationStore &inner_;
};

TEST_F(PushSchedulerTest, AStoreErrorWhileRemovingAGoneDeviceStaysInside) {
    FailingRemovalStore store(*f.store);
    xaps::PushScheduler scheduler(f.loop, store, f.sender, {}, [] { return 1000; });
    std::string logged;
    scheduler.set_error_log([&](std::string_view message) { logged = message; });
    f.store->put(make_registration("alice", "acct", "tok"), 1000);
    scheduler.notify("alice", "INBOX", new_mail);
    EXPECT_NO_THROW(f.sender.answer(0, gone(2000 * 1000)));
    EXPECT_NO_THROW(f.loop.advance(xaps::PushSchedulerSettings{}.removal_delay));
    EXPECT_EQ(scheduler.counters().errors, 1u);
    EXPECT_NE(logged.find("tok"), std::string::npos) << logged;
    EXPECT_EQ(scheduler.counters().in_flight, 0u);
}

// Counts the store's commits; removals go through the batch call only.
class CountingStore final : public xaps::RegistrationStore {
public:
    explicit CountingStore(xaps::RegistrationStore &inner) : inner_(inner) {}
    void put(const Registration &r, std::int64_t now) override { inner_.put(r, now); }
    bool import(const Registration &r) override { return inner_.import(r); }
    std::vector<Registration> find_user(std::string_view user, std::int64_t now) override {
        return inner_.find_user(user, now);
    }
    std::vector<Registration> all() override { return inner_.all(); }
    Page page_after(std::string_view user, std::string_view after, std::size_t max_rows,
                    std::int64_t now) override {
        return inner_.page_after(user, after, max_rows, now);
    }
    std::size_t size() override { return inner_.size(); }
    std::size_t remove_user(std::string_view user) override { return inner_.remove_user(user); }
    std::size_t remove_token(std::string_view) override { throw std::logic_error("unbatched"); }
    std::size_t remove_all() override { return inner_.remove_all(); }
    std::size_t remove_token_unless_seen_since(std::string_view, std::int64_t) override {
        throw std::logic_error("unbatched");
    }
    std::size_t remove_gone_tokens(std::span<const GoneToken> tokens) override {
        batches.push_back(tokens.size());
        return inner_.remove_gone_tokens(tokens);
    }
    std::size_t expire(std::int64_t now) override { return inner_.expire(now); }

    std::vector<std::size_t> batches;

private:
    xaps::RegistrationStore &inner_;
};

TEST_F(PushSchedulerTest, GoneDevicesAreRemovedInOneCommitPerBatch) {
    struct Row {
        std::string what;
        std::size_t max_removal_batch;
        std::vector<std::size_t> batches; // sizes of the commits, in order
    };
    const Row rows[] = {
        {"all within the window: one commit", 1000, {5}},
        {"a full batch commits at once, the rest after the window", 2, {2, 2, 1}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        SchedulerFixture f;
        CountingStore store(*f.store);
        xaps::PushScheduler scheduler(f.loop, store, f.sender,
                                      {.delay = 30s,
                                       .max_pending = 100,
                                       .removal_delay = 50ms,
                                       .max_removal_batch = row.max_removal_batch},
                                      [] { return 1000; });
        for (int i = 0; i < 6; ++i) {
            f.store->put(make_registration("alice", "acct", "tok" + std::to_string(i)), 1000);
        }
        scheduler.notify("alice", "INBOX", new_mail);
        ASSERT_EQ(f.sender.sent.size(), 6u);
        for (std::size_t i = 0; i < 5; ++i) {
            f.sender.answer(i, gone(2000 * 1000));
            if (row.max_removal_batch == 2 && i % 2 == 1) {
                f.loop.advance(0ms); // the end of this event-loop turn
            }
        }
        f.sender.answer(5, delivered());
        f.loop.advance(49ms);
        EXPECT_EQ(store.batches.size(), row.batches.size() - 1);
        f.loop.advance(1ms);
        EXPECT_EQ(store.batches, row.batches);
        EXPECT_EQ(scheduler.counters().devices_removed, 5u);
        EXPECT_EQ(scheduler.counters().removal_commits, row.batches.size());
        EXPECT_EQ(f.store->size(), 1u);
        EXPECT_EQ(f.loop.timers(), 0u);
    }
}

TEST_F(PushSchedulerTest, QueuedRemovalsAreCommittedWhenTheSchedulerStops) {
    f.store->put(make_registration("alice", "acct", "tok"), 1000);
    {
        xaps::PushScheduler scheduler(f.loop, *f.store, f.sender, {}, [] { return 1000; });
        scheduler.notify("alice", "INBOX", new_mail);
        f.sender.answer(0, gone(std::nullopt));
        EXPECT_EQ(f.store->size(), 1u);
    }
    EXPECT_EQ(f.store->size(), 0u);
    EXPECT_EQ(f.loop.timers(), 0u);
}

// The payload's "m": MD5 of the registered names (literals from
// `printf '%s' NAME | openssl md5`, upper-cased).
namespace hashes {
const std::string inbox = "7E33429F656F1E6E9D79B29C3F82C57E";       // INBOX
const std::string inbox_lower = "AF1CD994DFCB9286C394D142687FF5A0"; // inbox
const std::string sent = "579DB7EB2F78B2CB1F7F367CFF50C7A7";        // Sent Messages
const std::string archive = "CCD7D7A6D1558BB39540226CFA071C8C";     // Archive/2024
const std::string notes = "F4C6F851B00D5518BF888815DE279ABA";       // Notes
const std::string entwuerfe = "6935862F74F620598B6B2549C202AAFA";   // Entwürfe
} // namespace hashes

using Hashes = std::vector<std::string>;

TEST(PushSchedulerHashes, APushNamesTheRegisteredMailboxItIsAbout) {
    struct Row {
        unsigned aps_version;
        std::vector<std::string> mailboxes;
        std::string event_mailbox;
        Hashes m;
    };
    const Row rows[] = {
        {2, {"INBOX", "Sent Messages"}, "INBOX", {hashes::inbox}},
        {2, {"INBOX", "Sent Messages"}, "Sent Messages", {hashes::sent}},
        // The name as registered (= as echoed to the phone), not the event's.
        {2, {"inbox"}, "INBOX", {hashes::inbox_lower}},
        {2, {"Archive/2024"}, "Archive/2024", {hashes::archive}},
        {2, {"Entw\u00fcrfe"}, "Entw\u00fcrfe", {hashes::entwuerfe}},
        // Version 1: the phone has no mailbox table, "m" would be ignored.
        {1, {"INBOX"}, "INBOX", {}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE("v" + std::to_string(row.aps_version) + " " + row.event_mailbox);
        SchedulerFixture f;
        f.store->put(make_registration("alice", "acct", "tok", row.aps_version, row.mailboxes),
                     f.unix_now);
        f.scheduler.notify("alice", row.event_mailbox, new_mail);
        ASSERT_EQ(f.sender.sent.size(), 1u);
        EXPECT_EQ(f.sender.sent[0].push.mailbox_hashes, row.m);
    }
}

TEST_F(PushSchedulerTest, ACoalescedPushCarriesTheUnionOfItsMailboxes) {
    f.store->put(make_registration("alice", "acct", "tok", 2,
                                   {"INBOX", "Sent Messages", "Archive/2024", "Notes"}),
                 f.unix_now);
    f.scheduler.notify("alice", "Sent Messages", flags_set);
    f.scheduler.notify("alice", "Archive/2024", flags_set);
    f.scheduler.notify("alice", "Sent Messages", flags_set);
    f.scheduler.notify("alice", "Unregistered", new_mail); // not registered: no push
    EXPECT_TRUE(f.sender.sent.empty());
    f.scheduler.notify("alice", "INBOX", new_mail); // absorbs the pending push
    ASSERT_EQ(f.sender.sent.size(), 1u);
    EXPECT_EQ(f.sender.sent[0].push.mailbox_hashes,
              (Hashes{hashes::sent, hashes::archive, hashes::inbox}));

    // While it is in flight: the follow-up names only what came meanwhile.
    f.scheduler.notify("alice", "Notes", new_mail);
    f.scheduler.notify("alice", "Archive/2024", flags_set);
    f.scheduler.notify("alice", "Notes", new_mail);
    EXPECT_EQ(f.sender.sent.size(), 1u);
    f.sender.answer(0, delivered());
    ASSERT_EQ(f.sender.sent.size(), 2u);
    EXPECT_EQ(f.sender.sent[1].push.mailbox_hashes, (Hashes{hashes::notes, hashes::archive}));
    f.sender.answer(1, delivered());

    // A push of its own later: nothing left over from before.
    f.scheduler.notify("alice", "Sent Messages", new_mail);
    ASSERT_EQ(f.sender.sent.size(), 3u);
    EXPECT_EQ(f.sender.sent[2].push.mailbox_hashes, Hashes{hashes::sent});
}

TEST_F(PushSchedulerTest, EachDeviceGetsItsOwnMailboxes) {
    f.store->put(make_registration("alice", "phone-acct", "phone", 2, {"INBOX", "Sent Messages"}),
                 f.unix_now);
    f.store->put(make_registration("alice", "ipad-acct", "ipad", 2, {"inbox"}), f.unix_now);
    f.store->put(make_registration("alice", "old-acct", "old", 1), f.unix_now);
    f.scheduler.notify("alice", "Sent Messages", flags_set);
    f.scheduler.notify("alice", "INBOX", new_mail);
    ASSERT_EQ(f.sender.sent.size(), 3u);
    std::map<std::string, Hashes> by_token;
    for (const auto &sent : f.sender.sent) {
        by_token[sent.push.device_token] = sent.push.mailbox_hashes;
    }
    EXPECT_EQ(by_token["phone"], (Hashes{hashes::sent, hashes::inbox}));
    EXPECT_EQ(by_token["ipad"], Hashes{hashes::inbox_lower});
    EXPECT_EQ(by_token["old"], Hashes{});
}

// More mailbox names than the scheduler remembers digests of: those it
// forgot are computed again, the same.
TEST_F(PushSchedulerTest, MailboxHashesStayRightPastTheNamesItRemembers) {
    std::vector<std::string> alices{"Sent Messages"};
    std::vector<std::string> bobs{"Notes"};
    for (int i = 0; i < 700; ++i) {
        alices.push_back("Folder " + std::to_string(i));
        bobs.push_back("Project " + std::to_string(i));
    }
    f.store->put(make_registration("alice", "acct-a", "tok-a", 2, alices), f.unix_now);
    f.store->put(make_registration("bob", "acct-b", "tok-b", 2, bobs), f.unix_now);
    std::size_t answered = 0;
    auto push_for = [&](const std::string &user, const std::string &mailbox) {
        f.scheduler.notify(user, mailbox, new_mail);
        ASSERT_EQ(f.sender.sent.size(), answered + 1) << mailbox;
        f.sender.answer(answered++, delivered());
    };
    for (const auto &mailbox : alices) {
        push_for("alice", mailbox);
    }
    for (const auto &mailbox : bobs) {
        push_for("bob", mailbox);
    }
    push_for("alice", "Sent Messages");
    push_for("bob", "Notes");
    ASSERT_EQ(f.sender.sent.size(), 1404u);
    EXPECT_EQ(f.sender.sent[0].push.mailbox_hashes, Hashes{hashes::sent});
    EXPECT_EQ(f.sender.sent[701].push.mailbox_hashes, Hashes{hashes::notes});
    EXPECT_EQ(f.sender.sent[1402].push.mailbox_hashes, Hashes{hashes::sent});
    EXPECT_EQ(f.sender.sent[1403].push.mailbox_hashes, Hashes{hashes::notes});
}

TEST(PushSchedulerHashes, WithoutHashesPushesAreForTheInboxOnlyAndCarryNoM) {
    xaps::XapsSettings settings = xaps::default_xaps_settings();
    EXPECT_TRUE(xaps::PushSchedulerSettings::from(settings).mailbox_hashes) << "the default";
    settings.push_mailbox_hashes = false;
    SchedulerFixture f(xaps::PushSchedulerSettings::from(settings));
    f.store->put(make_registration("alice", "acct", "tok", 2, {"INBOX", "Sent Messages"}),
                 f.unix_now);
    f.scheduler.notify("alice", "Sent Messages", new_mail);
    f.loop.advance(1h);
    EXPECT_TRUE(f.sender.sent.empty()) << "iOS would fetch only its INBOX for it";
    f.scheduler.notify("alice", "INBOX", new_mail);
    ASSERT_EQ(f.sender.sent.size(), 1u);
    EXPECT_EQ(f.sender.sent[0].push.mailbox_hashes, Hashes{});
}

TEST_F(PushSchedulerTest, TestPushesCarryNoM) {
    f.store->put(make_registration("alice", "acct", "tok", 2, {"INBOX", "Sent Messages"}),
                 f.unix_now);
    f.scheduler.test("alice", [](auto) {});
    ASSERT_EQ(f.sender.sent.size(), 1u);
    EXPECT_EQ(f.sender.sent[0].push.mailbox_hashes, Hashes{});
}

} // namespace
