#include "shared-store-link.h"

#include "eventually.h"
#include "fake-shared-store.h"
#include "group-commit.h"
#include "poll-event-loop.h"
#include "registration-store.h"
#include "sample-registration.h"
#include "shared-store-module.h"
#include "temporary-directory.h"
#ifdef XAPS_STORE_MODULE_DIR
#include "postgres-server.h"
#endif

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using xaps::Error;
using xaps::ErrorKind;
using xaps::LogLevel;
using xaps::PollEventLoop;
using xaps::Registration;
using xaps::RegistrationStore;
using xaps::SharedStoreLink;
using xaps::SharedStoreLinkSettings;
using xaps::SharedStoreWrites;
using xaps::test::FakeSharedStore;
using xaps::test::sample_registration;
using xaps::test::TemporaryDirectory;
using xaps::test::with_times;

// Bounds only a failure: a loaded machine must still meet it.
constexpr auto generous = 20s;

Registration make_registration(const std::string &user, const std::string &token) {
    return with_times(sample_registration(user, "acct", token), 1700000000, 1700000000);
}

struct LogLine {
    LogLevel level;
    std::string message;
};

class SharedStoreLinkTest : public ::testing::Test {
protected:
    void SetUp() override {
        xaps::LmdbStoreOptions options;
        options.path = directory.path() + "/replica";
        options.ttl = std::chrono::hours(24 * 365 * 100);
        replica = xaps::open_lmdb_replica(options);
    }

    void start(SharedStoreLinkSettings settings = {}) {
        auto store = std::make_unique<FakeSharedStore>();
        fake = store.get();
        control = store->control();
        settings.retry_interval = 20ms;
        link = std::make_unique<SharedStoreLink>(
            loop,
            [&store](xaps::LogSink) -> std::unique_ptr<xaps::SharedRegistrationStore> {
                return std::move(store);
            },
            *replica, settings,
            [this](LogLevel level, std::string_view message) {
                logs.push_back(LogLine{level, std::string(message)});
            });
    }

    bool run_until(const std::function<bool()> &done) { return loop.run_until(done, generous); }

    std::size_t logs_containing(const std::string &text) const {
        std::size_t count = 0;
        for (const LogLine &line : logs) {
            count += line.message.find(text) != std::string::npos ? 1 : 0;
        }
        return count;
    }

    TemporaryDirectory directory;
    PollEventLoop loop;
    std::unique_ptr<xaps::ReplicaRegistrationStore> replica;
    FakeSharedStore *fake = nullptr;
    std::shared_ptr<FakeSharedStore::Control> control;
    std::vector<LogLine> logs;
    std::unique_ptr<SharedStoreLink> link;
};

TEST_F(SharedStoreLinkTest, JobRunsOnTheStoreThreadAndCompletesOnTheLoop) {
    start();
    auto size = std::make_shared<std::size_t>(99);
    bool called = false;
    std::optional<Error> heard;
    link->submit([size](xaps::SharedRegistrationStore &store) { *size = store.size(); },
                 [&](const std::optional<Error> &error) {
                     called = true;
                     heard = error;
                 });
    EXPECT_FALSE(called); // never from within submit()
    ASSERT_TRUE(run_until([&] { return called; }));
    EXPECT_FALSE(heard);
    EXPECT_EQ(*size, 0u);
}

TEST_F(SharedStoreLinkTest, AJobsErrorReachesItsCompletion) {
    start();
    std::optional<Error> heard;
    link->submit(
        [](xaps::SharedRegistrationStore &) { throw Error(ErrorKind::invalid_input, "bad row"); },
        [&](const std::optional<Error> &error) { heard = error; });
    ASSERT_TRUE(run_until([&] { return heard.has_value(); }));
    EXPECT_EQ(heard->kind(), ErrorKind::invalid_input);
    EXPECT_STREQ(heard->what(), "bad row");
}

TEST_F(SharedStoreLinkTest, ARegistrationIsInTheReplicaBeforeItsDoneRuns) {
    start();
    SharedStoreWrites writes(*link, 3000s);
    std::optional<RegistrationStore::BatchResults> results;
    std::size_t replica_size_at_done = 0;
    writes.write_batch({make_registration("alice", "aa11")}, 1700000100, {},
                       [&](RegistrationStore::BatchResults batch) {
                           replica_size_at_done = replica->size();
                           results = std::move(batch);
                       });
    ASSERT_TRUE(run_until([&] { return results.has_value(); }));
    ASSERT_EQ(results->puts.size(), 1u);
    EXPECT_FALSE(results->puts[0]);
    EXPECT_EQ(replica_size_at_done, 1u);
    const auto found = replica->find_user("ALICE", 1700000100);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].device_token, "aa11");
    EXPECT_EQ(found[0].last_seen, 1700000100);
    EXPECT_EQ(replica->applied_revision(), 1u);
}

TEST_F(SharedStoreLinkTest, AnotherWorkersChangesReachTheReplica) {
    start();
    fake->external_put(make_registration("bob", "bb22"));
    ASSERT_TRUE(run_until([&] { return replica->size() == 1; }));
    EXPECT_EQ(replica->find_user("bob", 1700000000).size(), 1u);
}

TEST_F(SharedStoreLinkTest, ABacklogOfSeveralPagesIsAppliedInOrder) {
    auto store = std::make_unique<FakeSharedStore>();
    for (const char *token : {"aa11", "bb22", "cc33", "dd44", "ee55"}) {
        store->external_put(make_registration("bob", token));
    }
    store->remove_token("bb22");
    SharedStoreLinkSettings settings;
    settings.page_size = 2;
    link = std::make_unique<SharedStoreLink>(
        loop,
        [&store](xaps::LogSink) -> std::unique_ptr<xaps::SharedRegistrationStore> {
            return std::move(store);
        },
        *replica, settings, nullptr);
    ASSERT_TRUE(run_until([&] { return replica->applied_revision() == 6; }));
    EXPECT_EQ(replica->size(), 4u);
    EXPECT_TRUE(replica->find_user("bob", 1700000000).size() == 4u);
}

TEST_F(SharedStoreLinkTest, APurgeReachesTheReplicaBeforeItIsAnswered) {
    start();
    fake->external_put(make_registration("bob", "bb22"));
    fake->external_put(make_registration("bob", "cc33"));
    ASSERT_TRUE(run_until([&] { return replica->size() == 2; }));
    SharedStoreWrites writes(*link, 3000s);
    std::optional<std::size_t> removed;
    std::size_t replica_size_at_done = 99;
    writes.purge(xaps::PurgeScope::token, "bb22",
                 [&](const std::optional<Error> &error, std::size_t count) {
                     EXPECT_FALSE(error);
                     replica_size_at_done = replica->size();
                     removed = count;
                 });
    ASSERT_TRUE(run_until([&] { return removed.has_value(); }));
    EXPECT_EQ(*removed, 1u);
    EXPECT_EQ(replica_size_at_done, 1u);
}

TEST_F(SharedStoreLinkTest, AnOutageIsLoggedOnceAndTheReturnOnce) {
    start();
    ASSERT_TRUE(run_until([&] { return link->status().connected; }));
    control->set_available(false);
    std::vector<std::optional<Error>> heard;
    for (int i = 0; i < 3; ++i) {
        link->submit([](xaps::SharedRegistrationStore &store) { store.remove_all(); },
                     [&](const std::optional<Error> &error) { heard.push_back(error); });
    }
    ASSERT_TRUE(run_until([&] { return heard.size() == 3; }));
    for (const auto &error : heard) {
        ASSERT_TRUE(error);
        EXPECT_EQ(error->kind(), ErrorKind::unavailable);
    }
    EXPECT_FALSE(link->status().connected);
    EXPECT_EQ(link->status_rows()[0].second, "unavailable: connection refused");
    EXPECT_EQ(logs_containing("shared registration store unavailable: connection refused"), 1u);

    control->set_available(true);
    ASSERT_TRUE(run_until([&] { return logs_containing("reachable again after") == 1; }));
    EXPECT_TRUE(link->status().connected);
    EXPECT_EQ(link->status_rows()[0].second, "connected");
    EXPECT_EQ(logs_containing("shared registration store unavailable"), 1u);
}

// Answered at its deadline while the job still runs: the answer is the
// loop's own, and the job's late commit still reaches the replica. The fake
// store's wait orders nothing between the threads, so a thread sanitizer
// (scripts/thread-sanitize.sh) sees whether the answer shares anything with
// the job.
TEST_F(SharedStoreLinkTest, AHungStoreIsAnsweredUnavailableAtTheDeadline) {
    SharedStoreLinkSettings settings;
    settings.timeout = 50ms;
    start(settings);
    ASSERT_TRUE(run_until([&] { return link->status().connected; }));
    control->write_batch_waits.store(true, std::memory_order_relaxed);
    SharedStoreWrites writes(*link, 3000s);
    std::optional<RegistrationStore::BatchResults> results;
    writes.write_batch({make_registration("alice", "aa11"), make_registration("bob", "bb22")},
                       1700000100, {make_registration("carol", "cc33")},
                       [&](RegistrationStore::BatchResults batch) { results = std::move(batch); });
    ASSERT_TRUE(run_until([&] { return results.has_value(); }));
    ASSERT_EQ(results->puts.size(), 2u);
    ASSERT_EQ(results->imports.size(), 1u);
    for (const std::optional<Error> &put : results->puts) {
        ASSERT_TRUE(put);
        EXPECT_EQ(put->kind(), ErrorKind::unavailable);
        EXPECT_NE(std::string(put->what()).find("did not answer within"), std::string::npos)
            << put->what();
    }
    EXPECT_FALSE(results->imports[0].added);
    ASSERT_TRUE(results->imports[0].error);
    EXPECT_EQ(results->imports[0].error->kind(), ErrorKind::unavailable);
    // Released, the late commit still reaches the replica.
    control->write_batch_waits.store(false, std::memory_order_relaxed);
    ASSERT_TRUE(run_until([&] { return replica->size() == 3; }));
}

TEST_F(SharedStoreLinkTest, AFullQueueFailsAtOnce) {
    SharedStoreLinkSettings settings;
    settings.max_queued_jobs = 1;
    settings.timeout = 60s;
    start(settings);
    ASSERT_TRUE(run_until([&] { return link->status().connected; }));
    control->set_hold(true);
    // The first is taken by the thread (and held), the second queued, the
    // third finds the queue full.
    std::vector<std::optional<Error>> heard(3);
    std::vector<bool> called(3, false);
    link->submit([](xaps::SharedRegistrationStore &store) { store.remove_all(); },
                 [&](const std::optional<Error> &error) {
                     called[0] = true;
                     heard[0] = error;
                 });
    ASSERT_TRUE(xaps::test::eventually(
        [&] {
            const std::lock_guard lock(control->mutex);
            return control->calls_held == 1;
        },
        generous));
    for (int i = 1; i < 3; ++i) {
        link->submit([](xaps::SharedRegistrationStore &store) { store.remove_all(); },
                     [&, i](const std::optional<Error> &error) {
                         called[i] = true;
                         heard[i] = error;
                     });
    }
    ASSERT_TRUE(run_until([&] { return called[2]; }));
    ASSERT_TRUE(heard[2]);
    EXPECT_NE(std::string(heard[2]->what()).find("too many requests"), std::string::npos);
    control->set_hold(false);
    ASSERT_TRUE(run_until([&] { return called[0] && called[1]; }));
    EXPECT_FALSE(heard[0]);
    EXPECT_FALSE(heard[1]);
}

TEST_F(SharedStoreLinkTest, ShutdownDropsQueuedJobsAndJoinsPromptly) {
    start();
    ASSERT_TRUE(run_until([&] { return link->status().connected; }));
    bool called = false;
    link->submit([](xaps::SharedRegistrationStore &store) { store.remove_all(); },
                 [&](const std::optional<Error> &) { called = true; });
    link.reset(); // must not wait for the fallback poll
    loop.run_once(10ms);
    EXPECT_FALSE(called);
}

TEST_F(SharedStoreLinkTest, GoneTokensAreKeptDuringAnOutageAndRemovedWhenItEnds) {
    start();
    fake->external_put(make_registration("bob", "bb22"));
    ASSERT_TRUE(run_until([&] { return replica->size() == 1; }));
    SharedStoreWrites writes(*link, 3000s);
    control->set_available(false);
    std::optional<std::optional<Error>> heard;
    writes.remove_gone_tokens(
        {RegistrationStore::GoneToken{"bb22", std::nullopt}},
        [&](const std::optional<Error> &error, std::size_t) { heard = error; });
    ASSERT_TRUE(run_until([&] { return heard.has_value(); }));
    EXPECT_FALSE(*heard); // kept, not failed
    EXPECT_EQ(writes.kept_removals(), 1u);
    control->set_available(true);
    ASSERT_TRUE(run_until([&] { return replica->size() == 0; }));
    EXPECT_EQ(writes.kept_removals(), 0u);
}

TEST_F(SharedStoreLinkTest, ExpiryRunsOncePerIntervalAcrossCalls) {
    start();
    SharedStoreWrites writes(*link, 3000s);
    std::vector<std::size_t> counts;
    fake->external_put(make_registration("old", "aa11"));
    fake->ttl = 100;
    writes.expire(1700001000, [&](const std::optional<Error> &error, std::size_t count) {
        EXPECT_FALSE(error);
        counts.push_back(count);
    });
    ASSERT_TRUE(run_until([&] { return counts.size() == 1; }));
    EXPECT_EQ(counts[0], 1u);
    fake->external_put(make_registration("old2", "bb22"));
    writes.expire(1700001060, [&](const std::optional<Error> &error, std::size_t count) {
        EXPECT_FALSE(error);
        counts.push_back(count);
    });
    ASSERT_TRUE(run_until([&] { return counts.size() == 2; }));
    EXPECT_EQ(counts[1], 0u); // within the interval: another run counts
}

TEST_F(SharedStoreLinkTest, PrunedTombstonesResetTheReplica) {
    start();
    fake->external_put(make_registration("bob", "bb22"));
    ASSERT_TRUE(run_until([&] { return replica->size() == 1; }));
    link.reset();
    // While this worker was away: bob's device went, carol's came, and the
    // tombstone was pruned.
    auto store = std::make_unique<FakeSharedStore>();
    store->external_put(make_registration("bob", "bb22"));
    store->remove_token("bb22");
    store->external_put(make_registration("carol", "cc33"));
    store->prune_tombstones();
    link = std::make_unique<SharedStoreLink>(
        loop,
        [&store](xaps::LogSink) -> std::unique_ptr<xaps::SharedRegistrationStore> {
            return std::move(store);
        },
        *replica, SharedStoreLinkSettings{}, nullptr);
    ASSERT_TRUE(run_until([&] { return replica->applied_revision() == 3; }));
    EXPECT_EQ(replica->size(), 1u);
    EXPECT_EQ(replica->find_user("carol", 1700000000).size(), 1u);
}

TEST_F(SharedStoreLinkTest, GroupCommitAnswersAfterTheSharedCommit) {
    start();
    SharedStoreWrites writes(*link, 3000s);
    xaps::GroupCommit group_commit(loop, writes, [] { return std::int64_t{1700000200}; });
    int answered = 0;
    for (const char *token : {"aa11", "bb22"}) {
        group_commit.put(make_registration("alice", token), [&](const std::optional<Error> &error) {
            EXPECT_FALSE(error);
            ++answered;
        });
    }
    ASSERT_TRUE(run_until([&] { return answered == 2; }));
    EXPECT_EQ(replica->find_user("alice", 1700000200).size(), 2u);
    EXPECT_EQ(group_commit.counters().commits, 1u);
}

#ifdef XAPS_STORE_MODULE_DIR
// The real thing: the module as the worker loads it, on a PostgreSQL server
// of the test's own.
TEST(SharedStoreLinkOnPostgres, ARegistrationReachesTheReplicaThroughTheModule) {
    if (!xaps::test::PostgresServer::available()) {
        GTEST_SKIP() << "PostgreSQL is not installed";
    }
    xaps::test::PostgresServer server;
    TemporaryDirectory directory;
    xaps::LmdbStoreOptions replica_options;
    replica_options.path = directory.path() + "/replica";
    replica_options.ttl = std::chrono::hours(24 * 365 * 100);
    auto replica = xaps::open_lmdb_replica(replica_options);
    xaps::SharedStoreModule module(XAPS_STORE_MODULE_DIR);
    PollEventLoop loop;
    xaps::SharedStoreOptions options;
    options.conninfo = server.conninfo();
    options.timeout = 10s;
    options.ttl = std::chrono::hours(24 * 365 * 100);
    SharedStoreLinkSettings settings;
    settings.timeout = 30s;
    auto link = std::make_unique<SharedStoreLink>(
        loop,
        [&](xaps::LogSink log) {
            options.log = std::move(log);
            return module.open(options);
        },
        *replica, settings, nullptr);
    auto writes = std::make_unique<SharedStoreWrites>(*link, 3000s);
    std::optional<RegistrationStore::BatchResults> results;
    std::size_t replica_size_at_done = 0;
    writes->write_batch({make_registration("alice", "aa11")}, 1700000100, {},
                        [&](RegistrationStore::BatchResults batch) {
                            replica_size_at_done = replica->size();
                            results = std::move(batch);
                        });
    ASSERT_TRUE(loop.run_until([&] { return results.has_value(); }, 60s));
    ASSERT_EQ(results->puts.size(), 1u);
    EXPECT_FALSE(results->puts[0]) << results->puts[0]->what();
    EXPECT_EQ(replica_size_at_done, 1u);
    EXPECT_GT(replica->applied_revision(), 0u);
    std::optional<std::size_t> removed;
    writes->purge(xaps::PurgeScope::user, "ALICE",
                  [&](const std::optional<Error> &error, std::size_t count) {
                      EXPECT_FALSE(error);
                      removed = count;
                  });
    ASSERT_TRUE(loop.run_until([&] { return removed.has_value(); }, 60s));
    EXPECT_EQ(*removed, 1u);
    EXPECT_EQ(replica->size(), 0u);
    writes.reset(); // it uses the link
    link.reset();   // the store goes before the module
}
#endif

} // namespace
