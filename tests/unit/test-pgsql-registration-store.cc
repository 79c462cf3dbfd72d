// What the PostgreSQL store does beyond the RegistrationStore semantics the
// conformance suite covers: revisions and tombstones, notifications between
// workers, expiry once per cluster, and faults of the database server.

#include "pgsql-registration-store.h"
#include "xaps-error.h"

#include <libpq-fe.h>

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "postgres-server.h"
#include "sample-registration.h"

namespace {

using xaps::ErrorKind;
using xaps::Registration;
using xaps::SharedRegistrationStore;
using xaps::StoreChange;
using xaps::test::sample_registration;

xaps::test::PostgresServer &postgres() {
    static xaps::test::PostgresServer server;
    return server;
}

// Runs SQL on a connection of the test's own.
void run_sql(const std::string &sql) {
    PGconn *connection = PQconnectdb(postgres().conninfo().c_str());
    ASSERT_EQ(PQstatus(connection), CONNECTION_OK) << PQerrorMessage(connection);
    PGresult *result = PQexec(connection, ("SET client_min_messages = warning; " + sql).c_str());
    EXPECT_EQ(PQresultStatus(result), PGRES_COMMAND_OK) << PQerrorMessage(connection);
    PQclear(result);
    PQfinish(connection);
}

ErrorKind error_kind_of(const std::function<void()> &action, std::string *message = nullptr) {
    try {
        action();
    } catch (const xaps::Error &error) {
        if (message != nullptr) {
            *message = error.what();
        }
        return error.kind();
    }
    ADD_FAILURE() << "no xaps::Error thrown";
    return ErrorKind::internal;
}

std::string describe(const StoreChange &change) {
    return (change.removed ? "-" : "+") + change.registration.user + "/" +
           change.registration.account_id + "/" + change.registration.device_token;
}

class PgsqlStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!xaps::test::PostgresServer::available()) {
            GTEST_SKIP() << "PostgreSQL is not installed";
        }
        postgres().start();
        run_sql("DROP TABLE IF EXISTS xaps_registrations, xaps_tombstones, xaps_meta; "
                "DROP SEQUENCE IF EXISTS xaps_revision");
    }
    void TearDown() override {
        if (xaps::test::PostgresServer::available()) {
            postgres().start();
        }
    }

    xaps::SharedStoreOptions options(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        xaps::SharedStoreOptions options;
        options.conninfo = postgres().conninfo();
        options.timeout = timeout;
        options.ttl = std::chrono::seconds(1000);
        options.max_devices_per_user = 16;
        return options;
    }

    std::unique_ptr<SharedRegistrationStore>
    open(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        return xaps::open_pgsql_store(options(timeout));
    }
};

TEST_F(PgsqlStoreTest, ChangesAfterListsWritesAndRemovalsInCommitOrder) {
    auto store = open();
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->put(sample_registration("Bob", "acct-1", "bb11"), 1000);
    store->remove_token("aa11");
    store->put(sample_registration("carol", "acct-1", "cc11"), 1000);
    store->put(sample_registration("BOB", "acct-1", "bb11"), 1100);

    auto page = store->changes_after(0, 100);
    EXPECT_FALSE(page.reset);
    std::vector<std::string> described;
    for (const auto &change : page.changes) {
        described.push_back(describe(change));
    }
    EXPECT_EQ(described, (std::vector<std::string>{"-alice/acct-1/aa11", "+carol/acct-1/cc11",
                                                   "+BOB/acct-1/bb11"}));
    ASSERT_EQ(page.changes.size(), 3u);
    EXPECT_LT(page.changes[0].revision, page.changes[1].revision);
    EXPECT_LT(page.changes[1].revision, page.changes[2].revision);
    Registration bob = sample_registration("BOB", "acct-1", "bb11");
    bob.registered_at = 1000;
    bob.last_seen = 1100;
    EXPECT_EQ(page.changes[2].registration, bob);

    // Pages of one change walk the same list.
    auto first = store->changes_after(0, 1);
    ASSERT_EQ(first.changes.size(), 1u);
    EXPECT_EQ(describe(first.changes[0]), "-alice/acct-1/aa11");
    auto rest = store->changes_after(first.changes[0].revision, 10);
    ASSERT_EQ(rest.changes.size(), 2u);
    EXPECT_EQ(describe(rest.changes[0]), "+carol/acct-1/cc11");
    EXPECT_TRUE(store->changes_after(page.changes[2].revision, 10).changes.empty());
}

TEST_F(PgsqlStoreTest, EveryRemovalLeavesATombstone) {
    auto store = xaps::open_pgsql_store([&] {
        auto opts = options();
        opts.max_devices_per_user = 1;
        return opts;
    }());
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->put(sample_registration("alice", "acct-2", "aa12"), 1001); // evicts acct-1
    store->put(sample_registration("bob", "acct-1", "bb11"), 1000);
    store->put(sample_registration("bob", "acct-2", "bb11"), 1000 + 82800); // retires acct-1
    store->put(sample_registration("carol", "acct-1", "cc11"), 1000);
    store->remove_user("CAROL");
    store->put(sample_registration("dave", "acct-1", "dd11"), 5000);
    EXPECT_EQ(store->expire(5000), 1u); // alice's acct-2 at 1001 < 5000 - 1000
    std::vector<std::string> removed;
    for (const auto &change : store->changes_after(0, 100).changes) {
        if (change.removed) {
            removed.push_back(describe(change));
        }
    }
    EXPECT_EQ(removed, (std::vector<std::string>{"-alice/acct-1/aa11", "-bob/acct-1/bb11",
                                                 "-carol/acct-1/cc11", "-alice/acct-2/aa12"}));
}

TEST_F(PgsqlStoreTest, AReaderBehindPrunedTombstonesIsToldToReset) {
    auto opts = options();
    opts.tombstone_retention = std::chrono::seconds(0);
    auto store = xaps::open_pgsql_store(opts);
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->put(sample_registration("bob", "acct-1", "bb11"), 1000);
    store->put(sample_registration("carol", "acct-1", "cc11"), 1000);
    store->remove_token("bb11");
    store->remove_token("cc11");
    const std::uint64_t caught_up = store->changes_after(0, 100).changes.back().revision;
    const std::uint64_t behind = store->changes_after(0, 1).changes.back().revision;

    ASSERT_EQ(store->expire_once(1000, std::chrono::seconds(60)), std::optional<std::size_t>(0));

    // Caught up: nothing to reload.
    auto page = store->changes_after(caught_up, 100);
    EXPECT_FALSE(page.reset);
    // Behind a pruned removal (bob's): a reload from revision 0. The newest
    // tombstone stays, and the live row took a revision after it.
    page = store->changes_after(behind, 1);
    EXPECT_TRUE(page.reset);
    ASSERT_EQ(page.changes.size(), 1u);
    EXPECT_EQ(describe(page.changes[0]), "-carol/acct-1/cc11");
    auto next = store->changes_after(page.changes[0].revision, 100);
    EXPECT_FALSE(next.reset);
    ASSERT_EQ(next.changes.size(), 1u);
    EXPECT_EQ(describe(next.changes[0]), "+alice/acct-1/aa11");
}

TEST_F(PgsqlStoreTest, WaitWakesOnAnotherWorkersCommitOnly) {
    auto reader = open();
    auto writer = open();
    reader->size(); // connected and listening
    EXPECT_EQ(reader->wait(std::chrono::milliseconds(50), -1),
              SharedRegistrationStore::Wake::timeout);
    reader->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    EXPECT_EQ(reader->wait(std::chrono::milliseconds(50), -1),
              SharedRegistrationStore::Wake::timeout);
    writer->put(sample_registration("bob", "acct-1", "bb11"), 1000);
    EXPECT_EQ(reader->wait(std::chrono::seconds(30), -1), SharedRegistrationStore::Wake::changed);
}

TEST_F(PgsqlStoreTest, WaitWakesOnTheWakeFd) {
    auto store = open();
    const int wake = ::eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(wake, 0);
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(wake, &one, sizeof one), static_cast<ssize_t>(sizeof one));
    EXPECT_EQ(store->wait(std::chrono::seconds(30), wake), SharedRegistrationStore::Wake::woken);
    ::close(wake);
}

TEST_F(PgsqlStoreTest, ExpireOnceRunsOnceAcrossWorkers) {
    auto first = open();
    auto second = open();
    first->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    first->put(sample_registration("bob", "acct-1", "bb11"), 4000);
    EXPECT_EQ(first->expire_once(5000, std::chrono::seconds(3600)), std::optional<std::size_t>(1));
    EXPECT_EQ(second->expire_once(5000, std::chrono::seconds(3600)), std::nullopt);
    EXPECT_EQ(second->expire_once(8599, std::chrono::seconds(3600)), std::nullopt);
    EXPECT_EQ(second->expire_once(8600, std::chrono::seconds(3600)), std::optional<std::size_t>(1));
    EXPECT_EQ(first->size(), 0u);
}

TEST_F(PgsqlStoreTest, TextThatIsNotUtf8IsRefusedAlone) {
    auto store = open();
    auto bad = sample_registration("alice", "acct-1", "aa11");
    bad.mailboxes = {"INBOX", "caf\xe9"};
    std::vector<Registration> batch = {sample_registration("bob", "acct-1", "bb11"), bad};
    auto results = store->put_batch(batch, 1000);
    ASSERT_EQ(results.size(), 2u);
    EXPECT_FALSE(results[0]);
    ASSERT_TRUE(results[1]);
    EXPECT_EQ(results[1]->kind(), ErrorKind::invalid_input);
    EXPECT_EQ(store->size(), 1u);
}

TEST_F(PgsqlStoreTest, ANewerSchemaIsRefused) {
    open();
    run_sql("UPDATE xaps_meta SET value = 99 WHERE name = 'schema_version'");
    std::string message;
    EXPECT_EQ(error_kind_of([&] { open(); }, &message), ErrorKind::config);
    EXPECT_NE(message.find("schema version 99"), std::string::npos) << message;
}

TEST_F(PgsqlStoreTest, AConnectionStringLibpqCannotParseIsAConfigError) {
    auto opts = options();
    opts.conninfo = "host=/tmp nonsense_keyword=1";
    EXPECT_EQ(error_kind_of([&] { xaps::open_pgsql_store(opts); }), ErrorKind::config);
}

TEST_F(PgsqlStoreTest, UnreachableFailsThenFailsAtOnceWithinTheBackoffThenRecovers) {
    auto store = open();
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    postgres().kill_hard();

    // The dead connection, then the failed reconnection.
    EXPECT_EQ(error_kind_of([&] { store->size(); }), ErrorKind::unavailable);
    std::string reason;
    EXPECT_EQ(error_kind_of([&] { store->size(); }, &reason), ErrorKind::unavailable);
    // Within the backoff: the same reason, without a new attempt (one made
    // later, on a slow machine, fails with the same reason too).
    std::string again;
    EXPECT_EQ(error_kind_of([&] { store->put(sample_registration("bob", "a", "bb"), 1); }, &again),
              ErrorKind::unavailable);
    EXPECT_EQ(again, reason);
    EXPECT_EQ(again.rfind("shared registration store: ", 0), 0u) << again;
    EXPECT_FALSE(store->last_error().empty());
    EXPECT_EQ(store->wait(std::chrono::milliseconds(20), -1),
              SharedRegistrationStore::Wake::timeout);

    postgres().start();
    // Back within the backoff's bound (1 s, then 2 s; a generous deadline).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool back = false;
    while (!back && std::chrono::steady_clock::now() < deadline) {
        try {
            back = store->size() == 1;
        } catch (const xaps::Error &error) {
            EXPECT_EQ(error.kind(), ErrorKind::unavailable);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    EXPECT_TRUE(back);
    EXPECT_TRUE(store->last_error().empty());
}

TEST_F(PgsqlStoreTest, AServerThatDoesNotAnswerTimesOut) {
    auto held = open();
    held->size();
    // Another worker holding the writers' lock: writes wait for it.
    PGconn *blocker = PQconnectdb(postgres().conninfo().c_str());
    ASSERT_EQ(PQstatus(blocker), CONNECTION_OK);
    PQclear(PQexec(blocker, "BEGIN"));
    PGresult *locked = PQexec(blocker, "SELECT pg_advisory_xact_lock(8126664316140666881)");
    ASSERT_EQ(PQresultStatus(locked), PGRES_TUPLES_OK) << PQerrorMessage(blocker);
    PQclear(locked);

    auto store = open(std::chrono::milliseconds(300));
    EXPECT_EQ(error_kind_of([&] { store->put(sample_registration("alice", "acct-1", "aa11"), 1); }),
              ErrorKind::unavailable);
    PQclear(PQexec(blocker, "ROLLBACK"));
    PQfinish(blocker);
    // The store connects again and the write goes through.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool stored = false;
    while (!stored && std::chrono::steady_clock::now() < deadline) {
        try {
            store->put(sample_registration("alice", "acct-1", "aa11"), 1);
            stored = true;
        } catch (const xaps::Error &) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    EXPECT_TRUE(stored);
    EXPECT_EQ(held->size(), 1u);
}

TEST_F(PgsqlStoreTest, AConnectionThatIsNotAnsweredTimesOut) {
    std::ifstream pid_file(postgres().data_dir() + "/postmaster.pid");
    pid_t postmaster = 0;
    ASSERT_TRUE(pid_file >> postmaster);
    // A frozen server: the kernel accepts the connection, nobody answers.
    ASSERT_EQ(::kill(postmaster, SIGSTOP), 0);
    std::string reason;
    std::unique_ptr<SharedRegistrationStore> store;
    try {
        store = open(std::chrono::milliseconds(300));
        error_kind_of([&] { store->size(); }, &reason);
    } catch (...) {
    }
    ::kill(postmaster, SIGCONT);
    EXPECT_NE(reason.find("no answer within 300 ms"), std::string::npos) << reason;
}

TEST_F(PgsqlStoreTest, NothingAcknowledgedIsLostWhenTheServerIsKilled) {
    auto store = open();
    std::vector<Registration> batch;
    for (int i = 0; i < 50; ++i) {
        batch.push_back(sample_registration("user" + std::to_string(i), "acct-1", "aa11"));
    }
    for (const auto &result : store->put_batch(batch, 1000)) {
        ASSERT_FALSE(result);
    }
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->remove_user("user7");
    postgres().kill_hard();
    postgres().start();
    auto reopened = open();
    EXPECT_EQ(reopened->size(), 50u);
    EXPECT_EQ(reopened->find_user("alice", 1000).size(), 1u);
    EXPECT_TRUE(reopened->find_user("user7", 1000).empty());
    EXPECT_EQ(reopened->find_user("user49", 1000).size(), 1u);
}

// The module as the worker loads it: dlopen() and the one C entry point.
// `meson test` builds it first.
TEST_F(PgsqlStoreTest, TheModuleOpensTheStoreThroughItsEntryPoint) {
    void *module = ::dlopen(XAPS_STORE_PGSQL_MODULE, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(module, nullptr) << ::dlerror();
    using Open = SharedRegistrationStore *(*)(const xaps::SharedStoreOptions *, std::string *);
    auto open_store = reinterpret_cast<Open>(::dlsym(module, "xaps_open_shared_store"));
    ASSERT_NE(open_store, nullptr) << ::dlerror();

    const xaps::SharedStoreOptions good = options();
    std::string error;
    std::unique_ptr<SharedRegistrationStore> store(open_store(&good, &error));
    ASSERT_NE(store, nullptr) << error;
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    EXPECT_EQ(store->find_user("ALICE", 1000).size(), 1u);
    EXPECT_EQ(error_kind_of([&] { store->put(sample_registration("", "a", "b"), 1000); }),
              ErrorKind::invalid_input);
    store.reset();

    xaps::SharedStoreOptions bad = options();
    bad.conninfo = "nonsense_keyword=1";
    EXPECT_EQ(open_store(&bad, &error), nullptr);
    EXPECT_NE(error.find("nonsense_keyword"), std::string::npos) << error;
    EXPECT_EQ(open_store(nullptr, &error), nullptr);
    ::dlclose(module);
}

} // namespace
