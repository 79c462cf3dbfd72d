// One suite of RegistrationStore semantics, run against every engine: the
// embedded LMDB store and the shared PostgreSQL store must answer alike.
// The PostgreSQL runs need a server (tests/support/postgres-server.h) and are
// skipped only when PostgreSQL is not installed.

#include "pgsql-registration-store.h"
#include "registration-store.h"
#include "xaps-error.h"

#include <libpq-fe.h>

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "postgres-server.h"
#include "sample-registration.h"
#include "temporary-directory.h"

namespace {

using xaps::ErrorKind;
using xaps::Registration;
using xaps::RegistrationStore;
using xaps::test::sample_registration;
using xaps::test::with_times;

enum class Engine { lmdb, pgsql };

std::set<std::string> accounts_of(const std::vector<Registration> &registrations) {
    std::set<std::string> accounts;
    for (const auto &registration : registrations) {
        accounts.insert(registration.account_id);
    }
    return accounts;
}

// One server for the whole program: initdb costs seconds.
xaps::test::PostgresServer &postgres() {
    static xaps::test::PostgresServer server;
    return server;
}

void drop_tables(const std::string &conninfo) {
    PGconn *connection = PQconnectdb(conninfo.c_str());
    ASSERT_EQ(PQstatus(connection), CONNECTION_OK) << PQerrorMessage(connection);
    PGresult *result = PQexec(
        connection, "SET client_min_messages = warning; DROP TABLE IF EXISTS xaps_registrations, "
                    "xaps_tombstones, xaps_meta; "
                    "DROP SEQUENCE IF EXISTS xaps_revision");
    EXPECT_EQ(PQresultStatus(result), PGRES_COMMAND_OK) << PQerrorMessage(connection);
    PQclear(result);
    PQfinish(connection);
}

class StoreConformance : public ::testing::TestWithParam<Engine> {
protected:
    void SetUp() override {
        if (GetParam() == Engine::pgsql) {
            if (!xaps::test::PostgresServer::available()) {
                GTEST_SKIP() << "PostgreSQL is not installed";
            }
            drop_tables(postgres().conninfo());
        }
    }

    std::unique_ptr<RegistrationStore>
    open(std::size_t cap = 16, std::chrono::seconds ttl = std::chrono::hours(24 * 30)) {
        if (GetParam() == Engine::lmdb) {
            xaps::LmdbStoreOptions options;
            options.path = dir_.path() + "/db";
            options.ttl = ttl;
            options.max_devices_per_user = cap;
            return xaps::open_lmdb_store(options);
        }
        xaps::SharedStoreOptions options;
        options.conninfo = postgres().conninfo();
        options.timeout = std::chrono::seconds(10);
        options.ttl = ttl;
        options.max_devices_per_user = cap;
        return xaps::open_pgsql_store(options);
    }

    xaps::test::TemporaryDirectory dir_{"xaps-conformance-",
                                        xaps::test::TemporaryDirectory::memory_base()};
};

TEST_P(StoreConformance, PutStoresTheRegistrationWithNowAsBothTimes) {
    auto store = open();
    auto registration = sample_registration("alice", "acct-1", "aa11", {"INBOX", "Sent \"Items\""});
    store->put(registration, 1000);
    auto found = store->find_user("alice", 1000);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0], with_times(registration, 1000, 1000));
    EXPECT_EQ(store->size(), 1u);
    EXPECT_TRUE(store->find_user("bob", 1000).empty());
}

TEST_P(StoreConformance, RenewalKeepsRegisteredAtAndTakesTheNewFields) {
    auto store = open();
    store->put(sample_registration("alice", "acct-1", "aa11", {"INBOX"}), 1000);
    auto changed = sample_registration("Alice", "acct-1", "aa11", {"INBOX", "Archive", ""});
    changed.subtopic = "other.topic";
    changed.aps_version = 1;
    store->put(changed, 2000);
    auto found = store->find_user("alice", 2000);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0], with_times(changed, 1000, 2000));
    EXPECT_EQ(found[0].user, "Alice");
    EXPECT_EQ(store->size(), 1u);
}

TEST_P(StoreConformance, UsersCompareIgnoringAsciiCase) {
    auto store = open();
    store->put(sample_registration("Alice@Example.COM", "acct-1", "aa11"), 1000);
    store->put(sample_registration("bob", "acct-1", "aa11"), 1000);
    EXPECT_EQ(store->find_user("alice@example.com", 1000).size(), 1u);
    EXPECT_EQ(store->find_user("ALICE@EXAMPLE.COM", 1000).size(), 1u);
    EXPECT_EQ(store->find_user("ALICE@EXAMPLE.COM", 1000)[0].user, "Alice@Example.COM");
    EXPECT_EQ(store->size(), 2u);
    // Non-ASCII letters compare exactly.
    store->put(sample_registration("\xc3\x89mile", "acct-1", "bb22"), 1000);
    EXPECT_TRUE(store->find_user("\xc3\xa9mile", 1000).empty());
    EXPECT_EQ(store->find_user("\xc3\x89MILE", 1000).size(), 1u);
}

TEST_P(StoreConformance, AnotherAccountOnTheSameTokenIsRetiredOnceOverdue) {
    auto store = open();
    store->put(sample_registration("alice", "acct-old", "aa11"), 1000);
    store->put(sample_registration("alice", "acct-other-token", "bb22"), 1000);
    store->put(sample_registration("bob", "acct-old", "aa11"), 1000);
    // 82,799 s later the old account is not overdue yet.
    store->put(sample_registration("alice", "acct-new", "aa11"), 83799);
    EXPECT_EQ(accounts_of(store->find_user("alice", 83799)),
              (std::set<std::string>{"acct-old", "acct-other-token", "acct-new"}));
    // 82,800 s after its last registration it is.
    store->put(sample_registration("alice", "acct-new", "aa11"), 83800);
    EXPECT_EQ(accounts_of(store->find_user("alice", 83800)),
              (std::set<std::string>{"acct-other-token", "acct-new"}));
    EXPECT_EQ(store->find_user("bob", 83800).size(), 1u);
}

TEST_P(StoreConformance, ImportDoesNotRetireOverdueAccounts) {
    auto store = open();
    store->put(sample_registration("alice", "acct-old", "aa11"), 1000);
    EXPECT_TRUE(
        store->import(with_times(sample_registration("alice", "acct-new", "aa11"), 90000, 90000)));
    EXPECT_EQ(store->size(), 2u);
}

TEST_P(StoreConformance, CapEvictsTheLeastRecentlySeenFirst) {
    auto store = open(3);
    store->put(sample_registration("alice", "acct-a", "aa01"), 100);
    store->put(sample_registration("alice", "acct-b", "aa02"), 300);
    store->put(sample_registration("alice", "acct-c", "aa03"), 200);
    store->put(sample_registration("bob", "acct-x", "aa09"), 50);
    store->put(sample_registration("alice", "acct-d", "aa04"), 400);
    EXPECT_EQ(accounts_of(store->find_user("alice", 400)),
              (std::set<std::string>{"acct-b", "acct-c", "acct-d"}));
    store->put(sample_registration("alice", "acct-e", "aa05"), 500);
    EXPECT_EQ(accounts_of(store->find_user("alice", 500)),
              (std::set<std::string>{"acct-b", "acct-d", "acct-e"}));
    EXPECT_EQ(store->find_user("bob", 500).size(), 1u);
}

TEST_P(StoreConformance, CapTiesGoToTheOlderRegistrationThenAccountThenToken) {
    auto store = open(2);
    ASSERT_TRUE(store->import(with_times(sample_registration("alice", "acct-b", "aa01"), 20, 100)));
    ASSERT_TRUE(store->import(with_times(sample_registration("alice", "acct-a", "aa02"), 10, 100)));
    store->put(sample_registration("alice", "acct-new", "aa03"), 200);
    EXPECT_EQ(accounts_of(store->find_user("alice", 200)),
              (std::set<std::string>{"acct-b", "acct-new"}));

    ASSERT_TRUE(store->import(with_times(sample_registration("carol", "acct-b", "aa01"), 10, 100)));
    ASSERT_TRUE(store->import(with_times(sample_registration("carol", "acct-a", "aa02"), 10, 100)));
    store->put(sample_registration("carol", "acct-new", "aa03"), 200);
    EXPECT_EQ(accounts_of(store->find_user("carol", 200)),
              (std::set<std::string>{"acct-b", "acct-new"}));

    ASSERT_TRUE(store->import(with_times(sample_registration("dave", "acct-a", "bb02"), 10, 100)));
    ASSERT_TRUE(store->import(with_times(sample_registration("dave", "acct-a", "bb01"), 10, 100)));
    store->put(sample_registration("dave", "acct-new", "bb03"), 200);
    std::set<std::string> tokens;
    for (const auto &registration : store->find_user("dave", 200)) {
        tokens.insert(registration.device_token);
    }
    EXPECT_EQ(tokens, (std::set<std::string>{"bb02", "bb03"}));
}

TEST_P(StoreConformance, ImportAddsOnlyMissingKeysAndKeepsTheirTimes) {
    auto store = open();
    auto registration = with_times(sample_registration("alice", "acct-1", "aa11"), 500, 900);
    EXPECT_TRUE(store->import(registration));
    auto again = with_times(sample_registration("ALICE", "acct-1", "aa11", {"Other"}), 1, 2);
    EXPECT_FALSE(store->import(again));
    auto found = store->find_user("alice", 1000);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0], registration);
}

TEST_P(StoreConformance, ImportBatchTellsAddedFromExistingAndRefusesInvalidAlone) {
    auto store = open();
    ASSERT_TRUE(store->import(with_times(sample_registration("alice", "acct-1", "aa11"), 1, 2)));
    std::vector<Registration> batch = {
        with_times(sample_registration("alice", "acct-1", "aa11"), 5, 6),
        with_times(sample_registration("bob", "acct-1", "aa11"), 5, 6),
        with_times(sample_registration("", "acct-1", "aa11"), 5, 6),
        with_times(sample_registration("BOB", "acct-1", "aa11"), 7, 8),
    };
    auto results = store->import_batch(batch);
    ASSERT_EQ(results.size(), 4u);
    EXPECT_FALSE(results[0].added);
    EXPECT_FALSE(results[0].error);
    EXPECT_TRUE(results[1].added);
    EXPECT_FALSE(results[1].error);
    EXPECT_FALSE(results[2].added);
    ASSERT_TRUE(results[2].error);
    EXPECT_EQ(results[2].error->kind(), ErrorKind::invalid_input);
    EXPECT_FALSE(results[3].added);
    EXPECT_FALSE(results[3].error);
    auto bob = store->find_user("bob", 10);
    ASSERT_EQ(bob.size(), 1u);
    EXPECT_EQ(bob[0].registered_at, 5);
    EXPECT_EQ(store->size(), 2u);
}

TEST_P(StoreConformance, PutBatchRefusesAnInvalidRegistrationAlone) {
    auto store = open();
    auto too_long_account = sample_registration("bob", std::string(129, 'a'), "bb22");
    std::vector<Registration> batch = {
        sample_registration("alice", "acct-1", "aa11"),
        too_long_account,
        sample_registration("carol", "acct-1", "cc33"),
        sample_registration("Alice", "acct-1", "aa11", {"Later"}),
    };
    auto results = store->put_batch(batch, 1000);
    ASSERT_EQ(results.size(), 4u);
    EXPECT_FALSE(results[0]);
    ASSERT_TRUE(results[1]);
    EXPECT_EQ(results[1]->kind(), ErrorKind::invalid_input);
    EXPECT_FALSE(results[2]);
    EXPECT_FALSE(results[3]);
    EXPECT_EQ(store->size(), 2u);
    auto alice = store->find_user("alice", 1000);
    ASSERT_EQ(alice.size(), 1u);
    EXPECT_EQ(alice[0].mailboxes, (std::vector<std::string>{"Later"}));
    EXPECT_TRUE(store->find_user("bob", 1000).empty());
}

TEST_P(StoreConformance, WriteBatchPutsThenImportsInOneCall) {
    auto store = open();
    std::vector<Registration> puts = {sample_registration("alice", "acct-1", "aa11"),
                                      sample_registration("alice", "", "aa12")};
    std::vector<Registration> imports = {
        with_times(sample_registration("alice", "acct-1", "aa11"), 1, 2),
        with_times(sample_registration("bob", "acct-1", "bb11"), 3, 4),
        with_times(sample_registration("bob", "acct-2", "bb12", {std::string(1025, 'm')}), 3, 4)};
    auto results = store->write_batch(puts, 1000, imports);
    ASSERT_EQ(results.puts.size(), 2u);
    ASSERT_EQ(results.imports.size(), 3u);
    EXPECT_FALSE(results.puts[0]);
    ASSERT_TRUE(results.puts[1]);
    EXPECT_EQ(results.puts[1]->kind(), ErrorKind::invalid_input);
    EXPECT_FALSE(results.imports[0].added);
    EXPECT_FALSE(results.imports[0].error);
    EXPECT_TRUE(results.imports[1].added);
    ASSERT_TRUE(results.imports[2].error);
    EXPECT_EQ(results.imports[2].error->kind(), ErrorKind::invalid_input);
    EXPECT_EQ(store->find_user("alice", 1000)[0].registered_at, 1000);
    EXPECT_EQ(store->size(), 2u);
}

TEST_P(StoreConformance, FindAndVisitSkipRegistrationsPastTheTtl) {
    auto store = open(16, std::chrono::seconds(1000));
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->put(sample_registration("alice", "acct-2", "aa12"), 1500);
    EXPECT_EQ(accounts_of(store->find_user("alice", 2000)),
              (std::set<std::string>{"acct-1", "acct-2"}));
    EXPECT_EQ(accounts_of(store->find_user("alice", 2001)), (std::set<std::string>{"acct-2"}));
    std::vector<Registration> visited;
    store->visit_user("ALICE", 2001, [&](const Registration &r) { visited.push_back(r); });
    EXPECT_EQ(accounts_of(visited), (std::set<std::string>{"acct-2"}));
    EXPECT_EQ(store->size(), 2u);
    EXPECT_EQ(store->all().size(), 2u);
}

TEST_P(StoreConformance, PageAfterWalksEveryoneInListingOrder) {
    auto store = open();
    store->put(sample_registration("carol", "acct-1", "cc01"), 1000);
    store->put(sample_registration("Bob", "acct-2", "bb02"), 1001);
    store->put(sample_registration("bob", "acct-1", "bb01"), 1002);
    store->put(sample_registration("alice", "acct-1", "aa01"), 1003);
    store->put(sample_registration("bob", "acct-3", "bb03"), 1004);

    std::vector<std::string> walked;
    std::string after;
    int pages = 0;
    do {
        auto page = store->page_after("", after, 2, 1004);
        for (const auto &registration : page.registrations) {
            walked.push_back(registration.user + "/" + registration.account_id);
        }
        after = page.next_after;
        ++pages;
    } while (!after.empty() && pages < 10);
    EXPECT_EQ(walked, (std::vector<std::string>{"alice/acct-1", "Bob/acct-2", "bob/acct-1",
                                                "bob/acct-3", "carol/acct-1"}));
    EXPECT_EQ(pages, 3);

    walked.clear();
    after.clear();
    pages = 0;
    do {
        auto page = store->page_after("BOB", after, 1, 1004);
        for (const auto &registration : page.registrations) {
            walked.push_back(registration.account_id);
        }
        after = page.next_after;
        ++pages;
        if (pages == 1) {
            // Removed and added between pages: the walk goes on undisturbed.
            store->remove_token("bb01");
            store->put(sample_registration("bob", "acct-4", "bb04"), 1005);
        }
    } while (!after.empty() && pages < 10);
    EXPECT_EQ(walked, (std::vector<std::string>{"acct-2", "acct-3", "acct-4"}));

    EXPECT_EQ(xaps::ErrorKind::invalid_input, [&] {
        try {
            store->page_after("", "x", 2, 1004);
        } catch (const xaps::Error &error) {
            return error.kind();
        }
        return ErrorKind::internal;
    }());
}

TEST_P(StoreConformance, PageAfterCountsExpiredRowsButSkipsThem) {
    auto store = open(16, std::chrono::seconds(100));
    store->put(sample_registration("alice", "acct-1", "aa01"), 1000);
    store->put(sample_registration("alice", "acct-2", "aa02"), 2000);
    auto page = store->page_after("", "", 1, 2000);
    EXPECT_TRUE(page.registrations.empty());
    EXPECT_FALSE(page.next_after.empty());
    page = store->page_after("", page.next_after, 1, 2000);
    ASSERT_EQ(page.registrations.size(), 1u);
    EXPECT_EQ(page.registrations[0].account_id, "acct-2");
    EXPECT_TRUE(page.next_after.empty());
}

TEST_P(StoreConformance, RemovalsCountWhatTheyRemove) {
    auto store = open();
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->put(sample_registration("alice", "acct-2", "aa12"), 1000);
    store->put(sample_registration("bob", "acct-1", "aa11"), 1000);
    store->put(sample_registration("carol", "acct-1", "cc11"), 1000);
    store->put(sample_registration("carol", "acct-2", "cc11"), 2000);
    store->put(sample_registration("dave", "acct-1", "dd11"), 1000);

    EXPECT_EQ(store->remove_token("aa11"), 2u);
    EXPECT_EQ(store->remove_token("aa11"), 0u);
    EXPECT_EQ(store->remove_token(""), 0u);
    EXPECT_EQ(store->remove_token_unless_seen_since("cc11", 1500), 1u);
    EXPECT_EQ(accounts_of(store->find_user("carol", 2000)), (std::set<std::string>{"acct-2"}));
    EXPECT_EQ(store->remove_user("ALICE"), 1u);
    EXPECT_EQ(store->remove_user("nobody"), 0u);

    store->put(sample_registration("erin", "acct-1", "ee11"), 1000);
    store->put(sample_registration("erin", "acct-2", "ee12"), 3000);
    std::vector<RegistrationStore::GoneToken> gone = {
        {"ee11", std::nullopt}, {"ee12", 2999}, {"dd11", 999}, {"zz99", std::nullopt}};
    EXPECT_EQ(store->remove_gone_tokens(gone), 1u);
    EXPECT_EQ(accounts_of(store->find_user("erin", 3000)), (std::set<std::string>{"acct-2"}));

    EXPECT_EQ(store->size(), 3u);
    EXPECT_EQ(store->remove_all(), 3u);
    EXPECT_EQ(store->size(), 0u);
    EXPECT_EQ(store->remove_all(), 0u);
}

TEST_P(StoreConformance, ExpireRemovesWhatIsPastTheTtl) {
    auto store = open(16, std::chrono::seconds(1000));
    store->put(sample_registration("alice", "acct-1", "aa11"), 1000);
    store->put(sample_registration("alice", "acct-2", "aa12"), 1001);
    store->put(sample_registration("bob", "acct-1", "bb11"), 5000);
    EXPECT_EQ(store->expire(2000), 0u);
    EXPECT_EQ(store->expire(2001), 1u);
    EXPECT_EQ(store->expire(2001), 0u);
    EXPECT_EQ(store->size(), 2u);
    EXPECT_EQ(store->expire(10000), 2u);
    EXPECT_EQ(store->size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, StoreConformance, ::testing::Values(Engine::lmdb, Engine::pgsql),
                         [](const ::testing::TestParamInfo<Engine> &info) {
                             return std::string(info.param == Engine::lmdb ? "Lmdb" : "Postgresql");
                         });

} // namespace
