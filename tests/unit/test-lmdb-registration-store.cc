#include "registration-store.h"
#include "xaps-error.h"

#include <lmdb.h>

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "format1-store.h"
#include "sample-registration.h"
#include "temporary-directory.h"

namespace {

using xaps::ErrorKind;
using xaps::LmdbStoreOptions;
using xaps::Registration;
using xaps::test::sample_registration;

// Durability is tested on the real disk (TemporaryDirectory::disk_base());
// tests of logic that needs many commits use memory_base(), where an fsync
// costs nothing.
class TempDir : public xaps::test::TemporaryDirectory {
public:
    explicit TempDir(const std::string &base = disk_base())
        : TemporaryDirectory("xaps-store-", base) {}
};

std::set<std::string> tokens_of(const std::vector<Registration> &registrations) {
    std::set<std::string> tokens;
    for (const auto &registration : registrations) {
        tokens.insert(registration.device_token);
    }
    return tokens;
}

ErrorKind error_kind_of(const std::function<void()> &action) {
    try {
        action();
    } catch (const xaps::Error &error) {
        return error.kind();
    }
    ADD_FAILURE() << "no xaps::Error thrown";
    return ErrorKind::internal;
}

class LmdbStoreTest : public ::testing::Test {
protected:
    LmdbStoreOptions options(std::size_t cap = 16,
                             std::chrono::seconds ttl = std::chrono::hours(24 * 30)) const {
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir_.path() + "/db";
        opts.ttl = ttl;
        opts.max_devices_per_user = cap;
        return opts;
    }

    TempDir dir_;
};

TEST_F(LmdbStoreTest, PutThenFindReturnsTheRegistrationWithTimes) {
    auto store = xaps::open_lmdb_store(options());
    auto registration = sample_registration("alice", "acct-1", "aa11", {"INBOX", "Sent Messages"});
    store->put(registration, 1000);

    auto found = store->find_user("alice", 1000);
    ASSERT_EQ(found.size(), 1u);
    registration.registered_at = 1000;
    registration.last_seen = 1000;
    EXPECT_EQ(found[0], registration);
    EXPECT_EQ(store->size(), 1u);
    EXPECT_TRUE(store->find_user("bob", 1000).empty());
}

TEST_F(LmdbStoreTest, ReplaceKeepsRegisteredAtAndTakesNewFields) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("alice", "acct-1", "aa11", {"INBOX"}), 1000);
    auto changed = sample_registration("alice", "acct-1", "aa11", {"INBOX", "Archive"});
    changed.subtopic = "other.topic";
    changed.aps_version = 1;
    store->put(changed, 2000);

    auto found = store->find_user("alice", 2000);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].registered_at, 1000);
    EXPECT_EQ(found[0].last_seen, 2000);
    EXPECT_EQ(found[0].mailboxes, (std::vector<std::string>{"INBOX", "Archive"}));
    EXPECT_EQ(found[0].subtopic, "other.topic");
    EXPECT_EQ(found[0].aps_version, 1u);
    EXPECT_EQ(store->size(), 1u);
}

TEST_F(LmdbStoreTest, ClonedPhoneWithSameAccountIdIsASecondRegistration) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("alice", "acct-1", "old0"), 1000);
    store->put(sample_registration("alice", "acct-1", "new1"), 1001);
    EXPECT_EQ(tokens_of(store->find_user("alice", 1001)), (std::set<std::string>{"old0", "new1"}));
}

TEST_F(LmdbStoreTest, UsersCompareCaseInsensitivelyInAscii) {
    struct Row {
        std::string stored_as;
        std::string looked_up_as;
        bool same_user;
    };
    const Row rows[] = {
        {"Alice@Example.COM", "alice@example.com", true},
        {"alice@example.com", "ALICE@EXAMPLE.COM", true},
        {"bob", "bob", true},
        {"bob", "bobby", false}, // a prefix of another name is another user
        {"bobby", "bob", false},
        {"J\xc3\xb6rg", "J\xc3\x96RG", false}, // only ASCII is folded (documented)
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.stored_as + " / " + row.looked_up_as);
        TempDir dir;
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir.path();
        auto store = xaps::open_lmdb_store(opts);
        store->put(sample_registration(row.stored_as, "acct", "tok"), 10);
        auto found = store->find_user(row.looked_up_as, 10);
        ASSERT_EQ(found.size(), row.same_user ? 1u : 0u);
        if (row.same_user) {
            EXPECT_EQ(found[0].user, row.stored_as); // the spelling as registered
            EXPECT_EQ(store->remove_user(row.looked_up_as), 1u);
            EXPECT_EQ(store->size(), 0u);
        }
    }
}

TEST_F(LmdbStoreTest, SameKeyInAnotherCaseReplacesAndTakesTheLatestSpelling) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("alice", "acct", "tok"), 10);
    store->put(sample_registration("ALICE", "acct", "tok"), 20);
    auto found = store->find_user("Alice", 20);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].user, "ALICE");
    EXPECT_EQ(found[0].registered_at, 10);
}

TEST_F(LmdbStoreTest, CapEvictsTheLeastRecentlySeen) {
    auto store = xaps::open_lmdb_store(options(3));
    store->put(sample_registration("alice", "a", "t1"), 1);
    store->put(sample_registration("alice", "a", "t2"), 2);
    store->put(sample_registration("alice", "a", "t3"), 3);
    store->put(sample_registration("bob", "b", "b1"), 3);
    store->put(sample_registration("alice", "a", "t1"), 4); // t1 seen again: t2 is now the oldest

    struct Step {
        std::string token;
        std::int64_t now;
        std::set<std::string> expected;
    };
    const Step steps[] = {
        {"t4", 5, {"t1", "t3", "t4"}},
        {"t5", 6, {"t1", "t4", "t5"}},
        {"t4", 7, {"t1", "t4", "t5"}}, // a refresh of a kept device evicts nothing
        {"t6", 8, {"t4", "t5", "t6"}},
    };
    for (const auto &step : steps) {
        SCOPED_TRACE(step.token);
        store->put(sample_registration("alice", "a", step.token), step.now);
        EXPECT_EQ(tokens_of(store->find_user("alice", step.now)), step.expected);
    }
    EXPECT_EQ(store->find_user("bob", 8).size(), 1u); // other users are untouched
    EXPECT_EQ(store->size(), 4u);
    // The evicted ones are gone from the token index too.
    EXPECT_EQ(store->remove_token("t2"), 0u);
}

TEST_F(LmdbStoreTest, ExpireDropsByLastSeenPlusTtl) {
    auto store = xaps::open_lmdb_store(options(16, std::chrono::seconds(100)));
    store->put(sample_registration("alice", "a", "old"), 0);
    store->put(sample_registration("alice", "a", "edge"), 50);
    store->put(sample_registration("alice", "a", "refreshed"), 10);
    store->put(sample_registration("alice", "a", "refreshed"), 120);
    store->put(sample_registration("bob", "b", "fresh"), 140);

    // At 150: "old" is 150 s old (> ttl), "edge" exactly the ttl (kept).
    EXPECT_EQ(tokens_of(store->find_user("alice", 150)),
              (std::set<std::string>{"edge", "refreshed"}));
    EXPECT_EQ(store->size(), 4u); // find_user hides, it does not remove
    EXPECT_EQ(store->expire(150), 1u);
    EXPECT_EQ(store->size(), 3u);
    EXPECT_EQ(store->expire(150), 0u);
    EXPECT_EQ(store->expire(221), 2u); // edge (50) and refreshed (120); fresh (140) stays
    EXPECT_EQ(tokens_of(store->all()), (std::set<std::string>{"fresh"}));
}

// Expiry walks hour buckets of last-seen: a renewal in a later hour must
// move the registration's entry, or expiry would find it under its old hour
// and a removal would leave that entry pointing at nothing.
TEST_F(LmdbStoreTest, ARenewalInALaterHourMovesItsExpiryEntry) {
    auto store = xaps::open_lmdb_store(options(16, std::chrono::seconds(100)));
    store->put(sample_registration("alice", "a", "renewed"), 10);
    store->put(sample_registration("alice", "a", "gone"), 20);
    store->put(sample_registration("alice", "a", "renewed"), 7210); // two hours on
    EXPECT_EQ(store->expire(7250), 1u);                             // only "gone"
    EXPECT_EQ(tokens_of(store->all()), std::set<std::string>{"renewed"});
    EXPECT_EQ(store->expire(7311), 1u); // "renewed", 101 s after its renewal
    EXPECT_EQ(store->size(), 0u);
    store->put(sample_registration("bob", "b", "t"), 3600);
    store->put(sample_registration("bob", "b", "t"), 9000);
    EXPECT_EQ(store->remove_token("t"), 1u);
    EXPECT_EQ(store->expire(100000), 0u); // no entry left behind
}

TEST(LmdbStore, ExpireRemovesMoreThanOneBatch) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.ttl = std::chrono::seconds(10);
    opts.max_devices_per_user = 0;
    auto store = xaps::open_lmdb_store(opts);
    constexpr int count = 1050; // expire commits in batches of 1000
    for (int i = 0; i < count; ++i) {
        ASSERT_TRUE(store->import([&] {
            auto registration = sample_registration("u" + std::to_string(i), "a", "t");
            registration.registered_at = registration.last_seen = i % 7;
            return registration;
        }()));
    }
    store->put(sample_registration("keep", "a", "t"), 100);
    EXPECT_EQ(store->expire(100), static_cast<std::size_t>(count));
    EXPECT_EQ(store->size(), 1u);
}

TEST_F(LmdbStoreTest, RemoveCounts) {
    struct Row {
        std::string what;
        std::function<std::size_t(xaps::RegistrationStore &)> remove;
        std::size_t removed;
        std::set<std::string> left; // tokens of everything left
    };
    const Row rows[] = {
        {"user", [](auto &s) { return s.remove_user("Alice"); }, 3, {"shared", "b1"}},
        {"unknown user",
         [](auto &s) { return s.remove_user("carol"); },
         0,
         {"a1", "a2", "shared", "b1"}},
        {"token shared by two users",
         [](auto &s) { return s.remove_token("shared"); },
         2,
         {"a1", "a2", "b1"}},
        {"unknown token",
         [](auto &s) { return s.remove_token("nope"); },
         0,
         {"a1", "a2", "shared", "b1"}},
        {"all", [](auto &s) { return s.remove_all(); }, 5, {}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        TempDir dir;
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir.path();
        auto store = xaps::open_lmdb_store(opts);
        store->put(sample_registration("alice", "a", "a1"), 1);
        store->put(sample_registration("alice", "a", "a2"), 1);
        store->put(sample_registration("alice", "a", "shared"), 1);
        store->put(sample_registration("bob", "b", "shared"), 1);
        store->put(sample_registration("bob", "b", "b1"), 1);
        EXPECT_EQ(row.remove(*store), row.removed);
        EXPECT_EQ(tokens_of(store->all()), row.left);
        EXPECT_EQ(store->size(), store->all().size());
        // Indexes follow: what is gone cannot be removed twice, and expire
        // finds exactly what is left.
        EXPECT_EQ(row.remove(*store), 0u);
        std::size_t left = store->all().size();
        EXPECT_EQ(store->expire(std::int64_t{1} + 31 * 24 * 3600), left);
        EXPECT_EQ(store->size(), 0u);
    }
}

TEST_F(LmdbStoreTest, RemoveTokenUnlessSeenSince) {
    struct Row {
        std::string what;
        std::int64_t since;
        std::set<std::string> left_accounts;
    };
    // acct-old last seen at 100, acct-new at 200, both with the same token.
    const Row rows[] = {
        {"both seen before", 300, {}},
        {"one seen after", 150, {"acct-new"}},
        {"seen exactly at since is not after", 100, {"acct-new"}},
        {"both seen after", 50, {"acct-old", "acct-new"}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        TempDir dir;
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir.path();
        auto store = xaps::open_lmdb_store(opts);
        store->put(sample_registration("alice", "acct-old", "tok"), 100);
        store->put(sample_registration("alice", "acct-new", "tok"), 200);
        store->put(sample_registration("alice", "acct-old", "other"), 10);
        EXPECT_EQ(store->remove_token_unless_seen_since("tok", row.since),
                  2 - row.left_accounts.size());
        std::set<std::string> left;
        for (const auto &registration : store->find_user("alice", 200)) {
            if (registration.device_token == "tok") {
                left.insert(registration.account_id);
            }
        }
        EXPECT_EQ(left, row.left_accounts);
        EXPECT_EQ(store->size(), row.left_accounts.size() + 1);
    }
}

TEST_F(LmdbStoreTest, ImportIsIdempotentAndKeepsTimes) {
    auto store = xaps::open_lmdb_store(options());
    auto imported = sample_registration("Alice", "a", "t", {"INBOX", "Notes"});
    imported.registered_at = 10;
    imported.last_seen = 20;
    EXPECT_TRUE(store->import(imported));
    auto again = imported;
    again.last_seen = 99;
    again.mailboxes = {"changed"};
    EXPECT_FALSE(store->import(again));
    EXPECT_FALSE(store->import([&] {
        auto other_case = imported;
        other_case.user = "ALICE";
        return other_case;
    }()));
    EXPECT_EQ(store->all(), std::vector<Registration>{imported});

    store->put(sample_registration("alice", "a", "t"), 500);
    auto found = store->find_user("alice", 500);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].registered_at, 10);
    EXPECT_EQ(found[0].last_seen, 500);
    EXPECT_EQ(store->expire(500 + 30 * 24 * 3600), 0u); // the old time left the index
}

TEST_F(LmdbStoreTest, ReopenKeepsEverything) {
    std::vector<Registration> before;
    {
        auto store = xaps::open_lmdb_store(options());
        store->put(sample_registration("alice", "a", "t1", {"INBOX", "\xe2\x82\xac uro"}), 5);
        store->put(sample_registration("Bob", "b", "t2", {}), 6);
        auto imported = sample_registration("carol", "c", "t3");
        imported.registered_at = -5; // times before the epoch survive the encoding
        imported.last_seen = 7;
        store->import(imported);
        before = store->all();
    }
    ASSERT_EQ(before.size(), 3u);
    auto store = xaps::open_lmdb_store(options());
    EXPECT_EQ(store->all(), before);
    EXPECT_EQ(store->find_user("bob", 6).size(), 1u);
    EXPECT_EQ(store->remove_token("t3"), 1u);
}

TEST_F(LmdbStoreTest, RefusesInvalidRegistrations) {
    auto store = xaps::open_lmdb_store(options());
    struct Row {
        std::string what;
        Registration registration;
    };
    const Row rows[] = {
        {"empty user", sample_registration("", "a", "t")},
        {"empty account", sample_registration("u", "", "t")},
        {"empty token", sample_registration("u", "a", "")},
        {"NUL in user", sample_registration(std::string("u\0v", 3), "a", "t")},
        {"NUL in account", sample_registration("u", std::string("a\0", 2), "t")},
        {"user too long", sample_registration(std::string(300, 'u'), "a", "t")},
        {"too many mailboxes",
         sample_registration("u", "a", "t", std::vector<std::string>(1001, "m"))},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        EXPECT_EQ(error_kind_of([&] { store->put(row.registration, 1); }),
                  ErrorKind::invalid_input);
        EXPECT_EQ(error_kind_of([&] { store->import(row.registration); }),
                  ErrorKind::invalid_input);
    }
    EXPECT_EQ(store->size(), 0u);
}

TEST_F(LmdbStoreTest, PutBatchStoresEveryRegistrationLikePut) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("alice", "acct-1", "aa11", {"INBOX"}), 1000);
    const std::vector<Registration> batch = {
        sample_registration("alice", "acct-1", "aa11", {"INBOX", "Archive"}), // replaces
        sample_registration("Bob", "acct-2", "bb22"),
        sample_registration("carol", "acct-3", "cc33", {"Sent Messages"}),
    };
    auto results = store->put_batch(batch, 2000);
    ASSERT_EQ(results.size(), batch.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
        SCOPED_TRACE(i);
        EXPECT_FALSE(results[i].has_value()) << results[i]->what();
    }
    EXPECT_EQ(store->size(), 3u);

    auto alice = store->find_user("alice", 2000);
    ASSERT_EQ(alice.size(), 1u);
    EXPECT_EQ(alice[0].registered_at, 1000);
    EXPECT_EQ(alice[0].last_seen, 2000);
    EXPECT_EQ(alice[0].mailboxes, (std::vector<std::string>{"INBOX", "Archive"}));
    auto bob = store->find_user("bob", 2000);
    ASSERT_EQ(bob.size(), 1u);
    EXPECT_EQ(bob[0].user, "Bob");
    EXPECT_EQ(bob[0].registered_at, 2000);
    EXPECT_EQ(store->remove_token("cc33"), 1u);          // the by_token index was written too
    EXPECT_EQ(store->expire(2000 + 31 * 24 * 3600), 2u); // and by_last_seen
}

TEST_F(LmdbStoreTest, PutBatchFailsInvalidRegistrationsAloneAndKeepsOrder) {
    auto store = xaps::open_lmdb_store(options());
    struct Row {
        std::string what;
        Registration registration;
        bool stored;
    };
    const Row rows[] = {
        {"valid first", sample_registration("u1", "a", "t1"), true},
        {"empty user", sample_registration("", "a", "t"), false},
        {"valid middle", sample_registration("u2", "a", "t2"), true},
        {"key beyond LMDB's key size",
         sample_registration(std::string(256, 'u'), std::string(256, 'a'), "t"), false},
        {"too many mailboxes",
         sample_registration("u", "a", "t", std::vector<std::string>(1001, "m")), false},
        {"valid last", sample_registration("u3", "a", "t3"), true},
    };
    std::vector<Registration> batch;
    for (const auto &row : rows) {
        batch.push_back(row.registration);
    }
    auto results = store->put_batch(batch, 5);
    ASSERT_EQ(results.size(), std::size(rows));
    for (std::size_t i = 0; i < std::size(rows); ++i) {
        SCOPED_TRACE(rows[i].what);
        EXPECT_EQ(!results[i].has_value(), rows[i].stored);
        if (results[i]) {
            EXPECT_EQ(results[i]->kind(), ErrorKind::invalid_input);
        }
    }
    EXPECT_EQ(store->size(), 3u);
    EXPECT_TRUE(store->put_batch({}, 5).empty());
}

TEST_F(LmdbStoreTest, PutBatchSeesItsOwnEarlierEntries) {
    auto store = xaps::open_lmdb_store(options(2));
    const std::vector<Registration> batch = {
        sample_registration("alice", "acct", "t1", {"INBOX"}),
        sample_registration("ALICE", "acct", "t1", {"Archive"}), // same key: replaces
        sample_registration("alice", "acct", "t2"),
        sample_registration("alice", "acct", "t3"), // beyond the cap of 2: evicts t1
    };
    auto results = store->put_batch(batch, 7);
    for (const auto &result : results) {
        EXPECT_FALSE(result.has_value());
    }
    EXPECT_EQ(tokens_of(store->find_user("alice", 7)), (std::set<std::string>{"t2", "t3"}));
    EXPECT_EQ(store->size(), 2u);
}

TEST(LmdbStore, PutBatchIsAllOrNothingWhenTheCommitFails) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.initial_map_size = 256 * 1024;
    opts.max_map_size = 256 * 1024;
    auto store = xaps::open_lmdb_store(opts);
    store->put(sample_registration("before", "a", "t"), 1);
    std::vector<Registration> batch;
    for (int i = 0; i < 2000; ++i) {
        batch.push_back(sample_registration("user" + std::to_string(i), "a", std::string(64, 'f'),
                                            std::vector<std::string>(20, "mailbox")));
    }
    batch.push_back(sample_registration("", "a", "t")); // invalid: its own error
    auto results = store->put_batch(batch, 2);
    ASSERT_EQ(results.size(), batch.size());
    for (std::size_t i = 0; i + 1 < batch.size(); ++i) {
        ASSERT_TRUE(results[i].has_value()) << i;
        EXPECT_EQ(results[i]->kind(), ErrorKind::unavailable);
        EXPECT_NE(std::string(results[i]->what()).find("MDB_MAP_FULL"), std::string::npos);
    }
    ASSERT_TRUE(results.back().has_value());
    EXPECT_EQ(results.back()->kind(), ErrorKind::invalid_input);
    EXPECT_EQ(store->size(), 1u);
    EXPECT_TRUE(store->find_user("user0", 2).empty());
    store->put(sample_registration("after", "a", "t2"), 3);
    EXPECT_EQ(store->size(), 2u);
}

TEST(LmdbStore, AFullStoreRefusesNewDevicesAndKeepsWhatWasStored) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.initial_map_size = 1024 * 1024;
    opts.max_map_size = 1024 * 1024;
    auto store = xaps::open_lmdb_store(opts);
    std::size_t stored = 0;
    try {
        for (; stored < 100000; ++stored) {
            store->put(sample_registration("user" + std::to_string(stored), "a",
                                           std::string(64, 'f'),
                                           std::vector<std::string>(20, "mailbox")),
                       1);
        }
        FAIL() << "the map never filled";
    } catch (const xaps::Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::unavailable);
        EXPECT_NE(std::string(error.what()).find(opts.path), std::string::npos) << error.what();
        EXPECT_NE(std::string(error.what()).find("registration store full"), std::string::npos)
            << error.what();
    }
    EXPECT_GT(stored, 0u);
    EXPECT_EQ(store->size(), stored);
    EXPECT_EQ(store->find_user("user0", 1).size(), 1u);
    // The reserve is for renewals and removals.
    store->put(sample_registration("user0", "a", std::string(64, 'f'),
                                   std::vector<std::string>(20, "mailbox")),
               2);
    EXPECT_EQ(store->find_user("user0", 2).at(0).last_seen, 2);
    EXPECT_EQ(store->remove_user("user1"), 1u);
    // A larger limit takes effect on an existing store.
    store.reset();
    opts.max_map_size *= 4;
    store = xaps::open_lmdb_store(opts);
    EXPECT_EQ(store->size(), stored - 1);
    store->put(sample_registration("again", "a", "t"), 2);
    EXPECT_EQ(store->size(), stored);
}

// 64 hex digits, distinct for each id.
std::string token_of(std::size_t id) {
    std::string digits = std::to_string(id);
    return std::string(64 - digits.size(), '0') + digits;
}

Registration numbered_registration(std::size_t id, std::size_t mailboxes = 20,
                                   std::size_t mailbox_length = 7) {
    return sample_registration(
        "user" + std::to_string(id), "acct", token_of(id),
        std::vector<std::string>(mailboxes, std::string(mailbox_length, 'm')));
}

std::size_t data_file_size(const std::string &store_path) {
    return static_cast<std::size_t>(std::filesystem::file_size(store_path + "/data.mdb"));
}

// The size of the numbered registrations fill_store() puts.
struct FillShape {
    std::size_t mailboxes = 20;
    std::size_t mailbox_length = 7;
};
// ~10 KiB each: a few overflow pages, so that the map fills fast.
constexpr FillShape large_registrations{40, 240};

// Puts numbered registrations at `now` in batches of 100, counting them in
// `stored`, until one is refused (returned) or `enough()` holds.
std::optional<xaps::Error> fill_store(xaps::RegistrationStore &store, std::size_t &stored,
                                      const std::function<bool()> &enough, std::int64_t now = 1,
                                      FillShape shape = {}) {
    while (!enough()) {
        std::vector<Registration> batch;
        for (std::size_t i = 0; i < 100; ++i) {
            batch.push_back(
                numbered_registration(stored + i, shape.mailboxes, shape.mailbox_length));
        }
        for (const auto &result : store.put_batch(batch, now)) {
            if (result) {
                return result;
            }
            ++stored;
        }
    }
    return std::nullopt;
}

struct RecordedLog {
    std::vector<std::pair<xaps::LogLevel, std::string>> lines;
    xaps::LogSink sink() {
        return [this](xaps::LogLevel level, std::string_view message) {
            lines.emplace_back(level, message);
        };
    }
};

constexpr std::size_t mebibyte = 1024 * 1024;

TEST(LmdbStore, TheMapGrowsOnDemandAndAReopenKeepsEveryRegistration) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.initial_map_size = 1 * mebibyte;
    opts.max_map_size = 16 * mebibyte;
    RecordedLog log;
    opts.log = log.sink();
    std::size_t stored = 0;
    {
        auto store = xaps::open_lmdb_store(opts);
        // Four times the first map: it has doubled at least twice.
        const std::optional<xaps::Error> refusal = fill_store(*store, stored, [&] {
            return data_file_size(opts.path) >= 4 * mebibyte || stored >= 100000;
        });
        ASSERT_FALSE(refusal.has_value()) << refusal->what();
        ASSERT_LT(stored, 100000u) << "the data file does not grow";
        store->put(numbered_registration(stored), 1);
        ++stored;
        EXPECT_EQ(store->size(), stored);
    }
    EXPECT_TRUE(log.lines.empty());
    auto store = xaps::open_lmdb_store(opts);
    ASSERT_EQ(store->size(), stored);
    for (std::size_t id = 0; id < stored; ++id) {
        auto found = store->find_user("user" + std::to_string(id), 1);
        ASSERT_EQ(found.size(), 1u) << id;
        ASSERT_EQ(found[0].device_token, token_of(id));
    }
    store->put(numbered_registration(stored), 2);
    EXPECT_EQ(store->size(), stored + 1);
}

TEST(LmdbStore, NearItsLimitTheStoreRefusesNewDevicesOnlyAndWarnsOnce) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.ttl = std::chrono::seconds(100);
    opts.initial_map_size = 1 * mebibyte;
    opts.max_map_size = 8 * mebibyte;
    RecordedLog log;
    opts.log = log.sink();
    auto store = xaps::open_lmdb_store(opts);

    std::size_t stored = 0;
    const std::optional<xaps::Error> refusal = fill_store(
        *store, stored, [&] { return stored >= 100000; }, 1000);
    ASSERT_TRUE(refusal.has_value()) << "never refused";
    EXPECT_EQ(refusal->kind(), ErrorKind::unavailable);
    const std::string refused = refusal->what();
    EXPECT_NE(refused.find("registration store full"), std::string::npos) << refused;
    EXPECT_NE(refused.find("xaps_db_max_size"), std::string::npos) << refused;
    EXPECT_EQ(store->size(), stored);
    // The refusal leaves room: the map never reached its limit.
    EXPECT_LE(data_file_size(opts.path), 8 * mebibyte);

    for (int attempt = 0; attempt < 3; ++attempt) {
        EXPECT_EQ(error_kind_of([&] { store->put(numbered_registration(stored + 1), 1001); }),
                  ErrorKind::unavailable);
        EXPECT_FALSE(store->import(numbered_registration(0)));
        EXPECT_EQ(error_kind_of([&] { store->import(numbered_registration(stored + 2)); }),
                  ErrorKind::unavailable);
    }
    // Renewals of every stored registration, in batches as the worker
    // commits them.
    for (std::size_t first = 0; first < stored; first += 100) {
        std::vector<Registration> batch;
        for (std::size_t id = first; id < std::min(first + 100, stored); ++id) {
            batch.push_back(numbered_registration(id));
        }
        for (const auto &result : store->put_batch(batch, 1050)) {
            ASSERT_FALSE(result.has_value()) << result->what();
        }
    }
    EXPECT_EQ(store->find_user("user0", 1050).at(0).last_seen, 1050);
    EXPECT_EQ(store->remove_token(token_of(1)), 1u);
    EXPECT_EQ(store->remove_user("user2"), 1u);
    std::vector<xaps::RegistrationStore::GoneToken> gone;
    for (std::size_t id = 3; id < stored / 2; ++id) {
        gone.push_back({token_of(id), std::nullopt});
    }
    EXPECT_EQ(store->remove_gone_tokens(gone), gone.size());

    ASSERT_EQ(log.lines.size(), 1u);
    EXPECT_EQ(log.lines[0].first, xaps::LogLevel::warning);
    EXPECT_NE(log.lines[0].second.find("xaps_db_max_size"), std::string::npos)
        << log.lines[0].second;
    EXPECT_NE(log.lines[0].second.find("8 MiB"), std::string::npos) << log.lines[0].second;

    // What the removals freed takes new devices again.
    store->put(numbered_registration(stored + 1), 1100);
    EXPECT_EQ(store->size(), stored - 2 - gone.size() + 1);
    // Expiry needs pages too.
    const std::size_t before_expiry = store->size();
    EXPECT_EQ(store->expire(1100 + 100 - 1), before_expiry - 1);
    EXPECT_EQ(store->size(), 1u);
}

TEST(LmdbStore, AStoreLargerThanItsLimitOpensAndRefusesOnlyNewDevices) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.initial_map_size = 1 * mebibyte;
    std::size_t stored = 0;
    {
        auto store = xaps::open_lmdb_store(opts);
        const std::optional<xaps::Error> refusal =
            fill_store(*store, stored, [&] { return data_file_size(opts.path) >= 3 * mebibyte; });
        ASSERT_FALSE(refusal.has_value()) << refusal->what();
    }
    opts.max_map_size = 1 * mebibyte;
    auto store = xaps::open_lmdb_store(opts);
    EXPECT_EQ(store->size(), stored);
    EXPECT_EQ(error_kind_of([&] { store->put(numbered_registration(stored), 2); }),
              ErrorKind::unavailable);
    store->put(numbered_registration(0), 2);
    EXPECT_EQ(store->find_user("user0", 2).at(0).last_seen, 2);
    EXPECT_EQ(store->remove_token(token_of(1)), 1u);
    EXPECT_EQ(store->size(), stored - 1);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define XAPS_TEST_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define XAPS_TEST_UNDER_SANITIZER 1
#endif
#endif

// Runs `body` in a child process whose address space is limited to
// `limit` bytes, as Dovecot's vsz_limit limits the worker's; the child's
// failures come back as its stderr and exit status.
void in_child_limited_to(std::uint64_t limit, const std::function<void()> &body) {
#ifdef XAPS_TEST_UNDER_SANITIZER
    GTEST_SKIP() << "a sanitizer reserves terabytes of address space: no RLIMIT_AS fits it";
#endif
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        struct rlimit rlimit {
            limit, limit
        };
        if (::setrlimit(RLIMIT_AS, &rlimit) != 0) {
            std::perror("setrlimit");
            ::_exit(2);
        }
        try {
            body();
        } catch (const std::exception &e) {
            std::fprintf(stderr, "child: %s\n", e.what());
            ::_exit(1);
        }
        ::_exit(::testing::Test::HasFailure() ? 1 : 0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0) << "see the child's output above";
}

// Dovecot's default vsz_limit.
constexpr std::uint64_t default_vsz_limit = 256 * mebibyte;

TEST(LmdbStore, OpensAndFillsUpUnderTheDefaultVszLimit) {
    TempDir dir(TempDir::memory_base());
    in_child_limited_to(default_vsz_limit, [&] {
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir.path();
        opts.max_devices_per_user = 0;
        RecordedLog log;
        opts.log = log.sink();
        auto store = xaps::open_lmdb_store(opts);
        std::size_t stored = 0;
        const std::optional<xaps::Error> refusal = fill_store(
            *store, stored, [&] { return stored >= 100000; }, 1, large_registrations);
        ASSERT_TRUE(refusal.has_value()) << "never refused";
        const std::string refused = refusal->what();
        EXPECT_NE(refused.find("registration store full"), std::string::npos) << refused;
        EXPECT_NE(refused.find("vsz_limit"), std::string::npos) << refused;
        // More than the first map (64 MiB): it grew.
        EXPECT_GT(data_file_size(opts.path), 64 * mebibyte);
        EXPECT_LT(data_file_size(opts.path), default_vsz_limit / 2);
        EXPECT_EQ(store->size(), stored);
        store->put(numbered_registration(0, 40, 240), 2);
        EXPECT_EQ(store->remove_token(token_of(1)), 1u);
        EXPECT_EQ(store->expire(2 + 30 * 86400), stored - 2);
        ASSERT_EQ(log.lines.size(), 1u);
        EXPECT_NE(log.lines[0].second.find("vsz_limit"), std::string::npos) << log.lines[0].second;
        std::fprintf(stderr, "child: %zu registrations of ~10 KiB, data file %zu MiB\n", stored,
                     data_file_size(opts.path) / mebibyte);
    });
}

// Address space taken after the open (threads, the heap) stops the map's
// growth short of the limit computed at open: the write that needed the
// growth fails, later new devices are refused, the store keeps working, and
// the one warning names vsz_limit.
TEST(LmdbStore, AddressSpaceTakenAfterTheOpenStopsGrowthCleanly) {
    TempDir dir(TempDir::memory_base());
    in_child_limited_to(default_vsz_limit, [&] {
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir.path();
        opts.max_devices_per_user = 0;
        RecordedLog log;
        opts.log = log.sink();
        auto store = xaps::open_lmdb_store(opts);
        void *taken = ::mmap(nullptr, 150 * mebibyte, PROT_NONE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        ASSERT_NE(taken, MAP_FAILED);
        std::size_t stored = 0;
        const std::optional<xaps::Error> failure = fill_store(
            *store, stored, [&] { return stored >= 100000; }, 1, large_registrations);
        ASSERT_TRUE(failure.has_value()) << "the map grew into address space it does not have";
        EXPECT_EQ(failure->kind(), ErrorKind::unavailable);
        EXPECT_NE(std::string(failure->what()).find("vsz_limit"), std::string::npos)
            << failure->what();
        // The first map (64 MiB) is all it has.
        EXPECT_LE(data_file_size(opts.path), 64 * mebibyte);
        EXPECT_EQ(store->size(), stored);
        EXPECT_EQ(error_kind_of([&] { store->put(numbered_registration(stored, 40, 240), 2); }),
                  ErrorKind::unavailable);
        EXPECT_EQ(store->remove_token(token_of(1)), 1u);
        store->put(numbered_registration(0, 40, 240), 2);
        EXPECT_EQ(store->expire(2 + 30 * 86400), stored - 2);
        ASSERT_EQ(log.lines.size(), 1u);
        EXPECT_NE(log.lines[0].second.find("vsz_limit"), std::string::npos) << log.lines[0].second;
        ::munmap(taken, 150 * mebibyte);
    });
}

TEST(LmdbStore, AStoreTheAddressSpaceCannotHoldIsAConfigErrorNamingVszLimit) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    std::size_t stored = 0;
    {
        auto store = xaps::open_lmdb_store(opts);
        const std::optional<xaps::Error> refusal = fill_store(
            *store, stored, [&] { return data_file_size(opts.path) >= 100 * mebibyte; }, 1,
            large_registrations);
        ASSERT_FALSE(refusal.has_value()) << refusal->what();
    }
    in_child_limited_to(128 * mebibyte, [&] {
        try {
            xaps::open_lmdb_store(opts);
            ADD_FAILURE() << "opened a 100 MiB store under a 128 MiB address-space limit";
        } catch (const xaps::Error &error) {
            EXPECT_EQ(error.kind(), ErrorKind::config);
            const std::string message = error.what();
            EXPECT_NE(message.find(opts.path), std::string::npos) << message;
            const std::string advice = "raise service xaps { vsz_limit } to at least ";
            const std::size_t at = message.find(advice);
            ASSERT_NE(at, std::string::npos) << message;
            // Room for the file twice over (to grow), in a unit Dovecot reads.
            const std::string value = message.substr(at + advice.size());
            EXPECT_GE(std::stoul(value), 200u) << message;
            EXPECT_EQ(std::stoul(value) % 64, 0u) << message;
            EXPECT_TRUE(value.ends_with("M")) << message;
        }
    });
}

TEST_F(LmdbStoreTest, OpenErrorsNameThePath) {
    std::string file = dir_.path() + "/plain-file";
    std::ofstream(file) << "not a directory";
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = file + "/db";
    try {
        xaps::open_lmdb_store(opts);
        FAIL() << "opened a store below a file";
    } catch (const xaps::Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::config);
        EXPECT_NE(std::string(error.what()).find(opts.path), std::string::npos) << error.what();
    }
}

// Writes straight into the store's LMDB databases, as a newer or broken
// version of the worker could have.
void raw_put(const std::string &path, const char *db, std::string_view key,
             std::string_view value) {
    MDB_env *env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    ASSERT_EQ(mdb_env_open(env, path.c_str(), 0, 0600), 0);
    MDB_txn *txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi = 0;
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k{key.size(), const_cast<char *>(key.data())};
    MDB_val v{value.size(), const_cast<char *>(value.data())};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

TEST_F(LmdbStoreTest, RefusesAStoreWithANewerSchema) {
    xaps::open_lmdb_store(options());
    raw_put(options().path, "meta", "schema_version", std::string("\x03\0\0\0", 4));
    try {
        xaps::open_lmdb_store(options());
        FAIL() << "opened a newer schema";
    } catch (const xaps::Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::config);
        EXPECT_NE(std::string(error.what()).find("schema version 3"), std::string::npos)
            << error.what();
    }
}

TEST_F(LmdbStoreTest, RefusesARecordOfAnUnknownFormat) {
    xaps::open_lmdb_store(options())->put(sample_registration("alice", "a", "t"), 1);
    // The first registration's id: 1, as 8 bytes big-endian.
    raw_put(options().path, "records", std::string("\0\0\0\0\0\0\0\x01", 8), "\x09garbage");
    auto store = xaps::open_lmdb_store(options());
    EXPECT_EQ(error_kind_of([&] { store->find_user("alice", 1); }), ErrorKind::internal);
    EXPECT_TRUE(store->find_user("bob", 1).empty());
}

// A child writes registrations in a loop and reports each one whose put()
// (or put_batch(), batch_size at a time) returned through a pipe; it is
// killed with SIGKILL at an arbitrary moment. Every reported registration must
// be there when the store is opened again, and the store must keep working.
// Repeated so that later rounds open a store whose previous writer died
// mid-transaction.
void expect_every_returned_put_survives_kill_dash_nine(const LmdbStoreOptions &opts,
                                                       std::uint32_t batch_size) {
    auto registration_of = [](std::uint32_t id) {
        return sample_registration("user" + std::to_string(id), "acct",
                                   "token" + std::to_string(id), {"INBOX", "Sent Messages"});
    };
    std::set<std::uint32_t> reported;
    std::uint32_t next_id = 0;
    const std::size_t kill_after[] = {1, 17, 60};
    for (std::size_t round_reports : kill_after) {
        SCOPED_TRACE(round_reports);
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(fds[0]);
            try {
                auto store = xaps::open_lmdb_store(opts);
                for (std::uint32_t first = next_id;; first += batch_size) {
                    if (batch_size == 1) {
                        store->put(registration_of(first), first);
                    } else {
                        std::vector<Registration> batch;
                        for (std::uint32_t id = first; id < first + batch_size; ++id) {
                            batch.push_back(registration_of(id));
                        }
                        for (const auto &result : store->put_batch(batch, first)) {
                            if (result) {
                                ::_exit(3);
                            }
                        }
                    }
                    for (std::uint32_t id = first; id < first + batch_size; ++id) {
                        if (::write(fds[1], &id, sizeof id) != sizeof id) {
                            ::_exit(2);
                        }
                    }
                }
            } catch (...) {
            }
            ::_exit(1);
        }
        ::close(fds[1]);
        std::size_t got = 0;
        std::uint32_t id = 0;
        while (::read(fds[0], &id, sizeof id) == sizeof id) {
            reported.insert(id);
            next_id = std::max(next_id, id + 1);
            if (++got == round_reports) {
                ::kill(pid, SIGKILL);
            }
        }
        ::close(fds[0]);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
        // The batch being written when killed may or may not be there.
        next_id = (next_id + batch_size - 1) / batch_size * batch_size + batch_size;
    }

    auto store = xaps::open_lmdb_store(opts);
    for (std::uint32_t id : reported) {
        SCOPED_TRACE(id);
        auto found = store->find_user("user" + std::to_string(id), id);
        ASSERT_EQ(found.size(), 1u);
        EXPECT_EQ(found[0].device_token, "token" + std::to_string(id));
        EXPECT_EQ(found[0].mailboxes, (std::vector<std::string>{"INBOX", "Sent Messages"}));
    }
    EXPECT_GE(store->size(), reported.size());
    EXPECT_LE(store->size(), reported.size() + std::size(kill_after) * batch_size);
    store->put(sample_registration("after", "a", "t"), 1);
    EXPECT_EQ(store->remove_token("token0"), 1u);
}

TEST_F(LmdbStoreTest, EveryReturnedPutSurvivesKillDashNine) {
    expect_every_returned_put_survives_kill_dash_nine(options(0), 1);
}

TEST_F(LmdbStoreTest, EveryReturnedPutBatchSurvivesKillDashNine) {
    expect_every_returned_put_survives_kill_dash_nine(options(0), 8);
}

// The 410 batch: each entry like remove_token / remove_token_unless_seen_since,
// in one commit, later entries seeing earlier ones.
TEST_F(LmdbStoreTest, RemoveGoneTokensRemovesEachLikeTheSingleCalls) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("alice", "acct-old", "tok"), 100);
    store->put(sample_registration("alice", "acct-new", "tok"), 200);
    store->put(sample_registration("alice", "acct", "bad"), 100);
    store->put(sample_registration("bob", "acct", "kept"), 100);
    using Gone = xaps::RegistrationStore::GoneToken;
    const std::vector<Gone> gone{
        {"tok", 150},          // acct-old only: acct-new was seen after
        {"bad", std::nullopt}, // no timestamp: all of it
        {"kept", 50},          // seen after: stays
        {"unknown", 500},      // nothing to remove
        {"bad", std::nullopt}, // already gone
    };
    EXPECT_EQ(store->remove_gone_tokens(gone), 2u);
    std::set<std::string> left;
    for (const auto &registration : store->all()) {
        left.insert(registration.account_id + "/" + registration.device_token);
    }
    EXPECT_EQ(left, (std::set<std::string>{"acct-new/tok", "acct/kept"}));
    EXPECT_EQ(store->remove_gone_tokens({}), 0u);
}

// visit_user sees what find_user returns, in the same order.
TEST_F(LmdbStoreTest, VisitUserSeesWhatFindUserReturns) {
    auto store = xaps::open_lmdb_store(options(16, std::chrono::seconds(100)));
    store->put(sample_registration("Alice", "a", "t1", {"INBOX", "Sent Messages", "Archive"}), 100);
    store->put(sample_registration("alice", "b", "t2", {"INBOX"}), 150);
    store->put(sample_registration("alice", "c", "expired", {"Drafts"}), 10);
    store->put(sample_registration("alicex", "a", "t3"), 150);
    for (const char *user : {"alice", "ALICE", "nobody"}) {
        SCOPED_TRACE(user);
        std::vector<Registration> visited;
        store->visit_user(user, 150, [&](const Registration &r) { visited.push_back(r); });
        EXPECT_EQ(visited, store->find_user(user, 150));
    }
    std::vector<Registration> visited;
    store->visit_user("alice", 150, [&](const Registration &r) { visited.push_back(r); });
    ASSERT_EQ(visited.size(), 2u);
    EXPECT_EQ(visited[0].mailboxes.size(), 3u);
    EXPECT_EQ(visited[1].mailboxes, (std::vector<std::string>{"INBOX"}));
}

// Stale rows: iOS registers each account again once 23 h (82,800 s) have
// passed since its last registration. A row of the same user and token under
// another account id that is that old when the phone registers is retired.
constexpr std::int64_t reregistration = 82800;

std::set<std::string> keys_of(const std::vector<Registration> &registrations) {
    std::set<std::string> keys;
    for (const auto &registration : registrations) {
        keys.insert(registration.user + "/" + registration.account_id + "/" +
                    registration.device_token);
    }
    return keys;
}

TEST_F(LmdbStoreTest, AReAddedAccountRetiresTheOldAccountOfTheSameToken) {
    auto store = xaps::open_lmdb_store(options());
    const std::int64_t t0 = 1'000'000;
    store->put(sample_registration("alice", "old", "tok"), t0);
    store->put(sample_registration("alice", "old", "other-phone"), t0);
    store->put(sample_registration("bob", "old", "tok"), t0);

    // Removed and re-added within the 23 h: the old row may still be live.
    store->put(sample_registration("alice", "new", "tok"), t0 + 3600);
    EXPECT_EQ(keys_of(store->all()),
              (std::set<std::string>{"alice/new/tok", "alice/old/other-phone", "alice/old/tok",
                                     "bob/old/tok"}));
    // The new account's own re-registration: the old one missed its own.
    store->put(sample_registration("alice", "new", "tok"), t0 + 3600 + reregistration);
    EXPECT_EQ(keys_of(store->all()),
              (std::set<std::string>{"alice/new/tok", "alice/old/other-phone", "bob/old/tok"}))
        << "only the same user's rows for the same token go";
    EXPECT_EQ(store->size(), 3u) << "the indexes shrink with the rows";
    EXPECT_EQ(store->remove_token("tok"), 2u);
}

TEST_F(LmdbStoreTest, AReAddedAccountRetiresAnAlreadyOverdueRowAtOnce) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("Alice", "old", "tok"), 1000);
    store->put(sample_registration("alice", "new", "tok"), 1000 + reregistration - 1);
    EXPECT_EQ(store->find_user("alice", 1000 + reregistration).size(), 2u);
    store->put(sample_registration("alice", "newer", "tok"), 1000 + reregistration);
    EXPECT_EQ(keys_of(store->all()), (std::set<std::string>{"alice/new/tok", "alice/newer/tok"}));
}

// Two accounts of one phone that share the push user (xaps_user_lookup): the
// phone registers both, each on its own 23 h cycle; neither is retired.
TEST_F(LmdbStoreTest, TwoLiveAccountsOnOnePhoneBothStay) {
    auto store = xaps::open_lmdb_store(options());
    std::int64_t next_a = 1'000'000;
    std::int64_t next_b = next_a + 40'000; // added later: the cycles are offset
    const std::int64_t lateness[] = {0, 5, 1200, 30, 7200, 1};
    for (int i = 0; i < 12; i++) {
        const bool a_first = next_a <= next_b;
        const std::int64_t now = a_first ? next_a : next_b;
        store->put(sample_registration("shared", a_first ? "account-a" : "account-b", "tok"), now);
        const std::int64_t delay = reregistration + lateness[i % 6];
        (a_first ? next_a : next_b) = now + delay;
        if (i > 0) {
            SCOPED_TRACE(i);
            EXPECT_EQ(keys_of(store->all()),
                      (std::set<std::string>{"shared/account-a/tok", "shared/account-b/tok"}));
        }
    }
}

// The phone was silent for days (Low Power Mode) and registers both accounts
// when it listens again: the first retires the overdue second, which comes
// back with its own registration moments later.
TEST_F(LmdbStoreTest, ALiveAccountRetiredAfterSilenceComesBackWithItsRegistration) {
    auto store = xaps::open_lmdb_store(options());
    const std::int64_t t0 = 1'000'000;
    store->put(sample_registration("shared", "account-a", "tok"), t0);
    store->put(sample_registration("shared", "account-b", "tok"), t0 + 10);
    const std::int64_t back = t0 + 3 * 86400;
    store->put(sample_registration("shared", "account-a", "tok"), back);
    EXPECT_EQ(keys_of(store->all()), (std::set<std::string>{"shared/account-a/tok"}));
    store->put(sample_registration("shared", "account-b", "tok"), back + 2);
    EXPECT_EQ(keys_of(store->all()),
              (std::set<std::string>{"shared/account-a/tok", "shared/account-b/tok"}));
}

TEST_F(LmdbStoreTest, ImportRetiresNothing) {
    auto store = xaps::open_lmdb_store(options());
    store->put(sample_registration("alice", "old", "tok"), 1000);
    Registration imported = sample_registration("alice", "new", "tok");
    imported.registered_at = 1000 + 2 * reregistration;
    imported.last_seen = imported.registered_at;
    EXPECT_TRUE(store->import(imported));
    EXPECT_EQ(store->size(), 2u) << "an import is no sign of the phone";
}

// Every page of a listing, as LIST walks them: (user, tokens) per page.
std::vector<std::vector<std::string>> page_tokens(xaps::RegistrationStore &store,
                                                  std::string_view user, std::size_t max_rows,
                                                  std::int64_t now) {
    std::vector<std::vector<std::string>> pages;
    std::string after;
    do {
        xaps::RegistrationStore::Page page = store.page_after(user, after, max_rows, now);
        std::vector<std::string> tokens;
        for (const auto &registration : page.registrations) {
            tokens.push_back(registration.user + "/" + registration.device_token);
        }
        pages.push_back(tokens);
        after = page.next_after;
    } while (!after.empty() && pages.size() < 100);
    return pages;
}

// Users in lower-cased order, each user's registrations in the order they
// were first registered (a renewal keeps its place).
TEST_F(LmdbStoreTest, PagesWalkTheStoreByUserThenFirstRegistration) {
    auto store = xaps::open_lmdb_store(options());
    for (const char *user : {"carol", "Alice", "bob"}) {
        for (const char *token : {"t2", "t1"}) {
            store->put(sample_registration(user, "a", token), 100);
        }
    }
    store->put(sample_registration("bob", "a", "t2"), 101);
    using Pages = std::vector<std::vector<std::string>>;
    EXPECT_EQ(page_tokens(*store, "", 4, 101),
              (Pages{{"Alice/t2", "Alice/t1", "bob/t2", "bob/t1"}, {"carol/t2", "carol/t1"}}));
    // A page boundary at the store's end: no empty page after it.
    EXPECT_EQ(page_tokens(*store, "", 3, 101),
              (Pages{{"Alice/t2", "Alice/t1", "bob/t2"}, {"bob/t1", "carol/t2", "carol/t1"}}));
    EXPECT_EQ(page_tokens(*store, "", 6, 101),
              (Pages{{"Alice/t2", "Alice/t1", "bob/t2", "bob/t1", "carol/t2", "carol/t1"}}));
    // One user's rows across pages, and nobody else's.
    EXPECT_EQ(page_tokens(*store, "BOB", 1, 101), (Pages{{"bob/t2"}, {"bob/t1"}}));
    EXPECT_EQ(page_tokens(*store, "dave", 1, 100), (Pages{{}}));
    EXPECT_EQ(page_tokens(*store, "", 1000, 100).size(), 1u);
}

TEST_F(LmdbStoreTest, PagesSkipExpiredRowsButWalkPastThem) {
    auto store = xaps::open_lmdb_store(options(16, std::chrono::seconds(1000)));
    store->put(sample_registration("alice", "a", "t1"), 100);  // expired at 2000
    store->put(sample_registration("alice", "a", "t2"), 1500); // live
    store->put(sample_registration("alice", "a", "t3"), 100);  // expired
    store->put(sample_registration("bob", "a", "t1"), 100);    // expired
    using Pages = std::vector<std::vector<std::string>>;
    EXPECT_EQ(page_tokens(*store, "", 2, 2000), (Pages{{"alice/t2"}, {}}));
    EXPECT_EQ(page_tokens(*store, "alice", 1, 2000), (Pages{{}, {"alice/t2"}, {}}));
    EXPECT_EQ(store->size(), 4u); // listing removes nothing
}

TEST_F(LmdbStoreTest, ChangesBetweenPagesDoNotBreakTheWalk) {
    auto store = xaps::open_lmdb_store(options());
    for (const char *user : {"u1", "u2", "u3", "u4", "u5"}) {
        store->put(sample_registration(user, "a", "t"), 100);
    }
    auto first = store->page_after("", "", 2, 100);
    ASSERT_EQ(tokens_of(first.registrations), std::set<std::string>{"t"});
    ASSERT_EQ(first.registrations.size(), 2u);
    EXPECT_EQ(first.registrations[1].user, "u2");
    // The last row listed goes, one behind the walk comes, one ahead comes
    // and one ahead goes.
    store->remove_user("u2");
    store->put(sample_registration("u0", "a", "t"), 100);
    store->put(sample_registration("u35", "a", "t"), 100);
    store->remove_user("u4");
    std::vector<std::string> rest;
    for (std::string after = first.next_after; !after.empty();) {
        auto page = store->page_after("", after, 2, 100);
        for (const auto &registration : page.registrations) {
            rest.push_back(registration.user);
        }
        after = page.next_after;
    }
    EXPECT_EQ(rest, (std::vector<std::string>{"u3", "u35", "u5"}));
}

TEST_F(LmdbStoreTest, APageOfLargeRowsIsBoundedInBytes) {
    auto store = xaps::open_lmdb_store(options(0));
    // 40 rows of 1,000 mailbox names of 100 bytes: 4 MB in all.
    for (int i = 0; i < 40; ++i) {
        store->put(sample_registration("u" + std::to_string(100 + i), "a", "t",
                                       std::vector<std::string>(1000, std::string(100, 'm'))),
                   100);
    }
    std::size_t pages = 0;
    std::size_t rows = 0;
    for (std::string after;;) {
        auto page = store->page_after("", after, 1000, 100);
        ++pages;
        rows += page.registrations.size();
        EXPECT_LE(page.registrations.size(), 4u); // 256 KiB and one row at most
        after = page.next_after;
        if (after.empty()) {
            break;
        }
    }
    EXPECT_EQ(rows, 40u);
    EXPECT_GE(pages, 10u);
}

TEST_F(LmdbStoreTest, ImportBatchAddsInOneCommitAndSaysWhatExists) {
    auto store = xaps::open_lmdb_store(options());
    auto existing = sample_registration("alice", "a", "t0");
    existing.registered_at = 10;
    existing.last_seen = 20;
    ASSERT_TRUE(store->import(existing));

    auto fresh = sample_registration("alice", "a", "t1");
    fresh.registered_at = 30;
    fresh.last_seen = 40;
    auto same_key_again = fresh;
    same_key_again.user = "ALICE";
    same_key_again.last_seen = 50;
    const std::vector<Registration> batch = {
        fresh,                                // imported
        existing,                             // exists: stored before
        sample_registration("", "a", "t"),    // invalid: fails alone
        same_key_again,                       // exists: earlier in this batch
        sample_registration("bob", "a", "t"), // imported
    };
    auto results = store->import_batch(batch);
    ASSERT_EQ(results.size(), 5u);
    const bool added[] = {true, false, false, false, true};
    for (std::size_t i = 0; i < 5; ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(results[i].added, added[i]);
        EXPECT_EQ(results[i].error.has_value(), i == 2);
    }
    EXPECT_EQ(results[2].error->kind(), ErrorKind::invalid_input);
    EXPECT_EQ(store->size(), 3u);
    auto alice = store->find_user("alice", 40);
    ASSERT_EQ(alice.size(), 2u);
    EXPECT_EQ(alice[1], fresh); // times as imported, the first spelling
    EXPECT_TRUE(store->import_batch({}).empty());
}

TEST_F(LmdbStoreTest, WriteBatchPutsThenImportsInOneCommit) {
    auto store = xaps::open_lmdb_store(options());
    auto imported = sample_registration("alice", "a", "t1");
    imported.registered_at = 10;
    imported.last_seen = 20;
    const std::vector<Registration> puts = {sample_registration("alice", "a", "t1"),
                                            sample_registration("", "a", "t")};
    const std::vector<Registration> imports = {imported, sample_registration("bob", "a", "t2")};
    auto results = store->write_batch(puts, 500, imports);
    ASSERT_EQ(results.puts.size(), 2u);
    ASSERT_EQ(results.imports.size(), 2u);
    EXPECT_FALSE(results.puts[0].has_value());
    ASSERT_TRUE(results.puts[1].has_value());
    EXPECT_EQ(results.puts[1]->kind(), ErrorKind::invalid_input);
    EXPECT_FALSE(results.imports[0].added) << "the put before it stored the key";
    EXPECT_FALSE(results.imports[0].error.has_value());
    EXPECT_TRUE(results.imports[1].added);
    EXPECT_EQ(store->find_user("alice", 500).at(0).registered_at, 500);
    EXPECT_EQ(store->size(), 2u);
}

TEST(LmdbStore, ImportBatchIsAllOrNothingWhenTheCommitFails) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.initial_map_size = 256 * 1024;
    opts.max_map_size = 256 * 1024;
    auto store = xaps::open_lmdb_store(opts);
    std::vector<Registration> batch;
    for (int i = 0; i < 2000; ++i) {
        batch.push_back(sample_registration("user" + std::to_string(i), "a", std::string(64, 'f'),
                                            std::vector<std::string>(20, "mailbox")));
    }
    auto results = store->import_batch(batch);
    ASSERT_EQ(results.size(), batch.size());
    for (const auto &result : results) {
        ASSERT_TRUE(result.error.has_value());
        EXPECT_EQ(result.error->kind(), ErrorKind::unavailable);
        EXPECT_FALSE(result.added);
    }
    EXPECT_EQ(store->size(), 0u);
}

// The replica side: a shared store's changes, applied as given.

xaps::StoreChange upsert(std::uint64_t revision, Registration registration) {
    return xaps::StoreChange{revision, false, std::move(registration)};
}

xaps::StoreChange removal(std::uint64_t revision, std::string user, std::string account_id,
                          std::string token) {
    xaps::StoreChange change;
    change.revision = revision;
    change.removed = true;
    change.registration.user = std::move(user);
    change.registration.account_id = std::move(account_id);
    change.registration.device_token = std::move(token);
    return change;
}

Registration seen_at(Registration registration, std::int64_t registered_at,
                     std::int64_t last_seen) {
    registration.registered_at = registered_at;
    registration.last_seen = last_seen;
    return registration;
}

TEST_F(LmdbStoreTest, ANewReplicaIsAtRevisionZero) {
    auto replica = xaps::open_lmdb_replica(options());
    EXPECT_EQ(replica->applied_revision(), 0u);
}

TEST_F(LmdbStoreTest, AReplicaStoresChangesExactlyAsGiven) {
    auto replica = xaps::open_lmdb_replica(options());
    xaps::ChangePage page;
    page.changes.push_back(
        upsert(5, seen_at(sample_registration("Alice", "a1", "aa11"), 1000, 2000)));
    page.changes.push_back(
        upsert(7, seen_at(sample_registration("alice", "a2", "aa11"), 900, 950)));
    replica->apply(page);
    EXPECT_EQ(replica->applied_revision(), 7u);
    const auto found = replica->find_user("ALICE", 2000);
    ASSERT_EQ(found.size(), 2u); // no retirement of the overdue account: not a replica's call
    for (const Registration &registration : found) {
        if (registration.account_id == "a1") {
            EXPECT_EQ(registration.registered_at, 1000);
            EXPECT_EQ(registration.last_seen, 2000);
            EXPECT_EQ(registration.user, "Alice");
        } else {
            EXPECT_EQ(registration.registered_at, 900);
            EXPECT_EQ(registration.last_seen, 950);
        }
    }
}

TEST_F(LmdbStoreTest, AReplicaAppliesNoCap) {
    auto replica = xaps::open_lmdb_replica(options(1));
    xaps::ChangePage page;
    page.changes.push_back(upsert(1, seen_at(sample_registration("bob", "a1", "aa11"), 10, 10)));
    page.changes.push_back(upsert(2, seen_at(sample_registration("bob", "a2", "bb22"), 20, 20)));
    replica->apply(page);
    EXPECT_EQ(replica->find_user("bob", 20).size(), 2u);
}

TEST_F(LmdbStoreTest, AReplicaReplacesAndRemovesByKey) {
    auto replica = xaps::open_lmdb_replica(options());
    xaps::ChangePage first;
    first.changes.push_back(upsert(1, seen_at(sample_registration("bob", "a1", "aa11"), 10, 10)));
    first.changes.push_back(upsert(2, seen_at(sample_registration("bob", "a2", "bb22"), 10, 10)));
    replica->apply(first);
    xaps::ChangePage second;
    second.changes.push_back(
        upsert(3, seen_at(sample_registration("BOB", "a1", "aa11", {"INBOX", "Work"}), 10, 30)));
    second.changes.push_back(removal(4, "Bob", "a2", "bb22"));
    replica->apply(second);
    EXPECT_EQ(replica->applied_revision(), 4u);
    const auto found = replica->find_user("bob", 30);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].last_seen, 30);
    EXPECT_EQ(found[0].mailboxes, (std::vector<std::string>{"INBOX", "Work"}));
    EXPECT_EQ(replica->size(), 1u);
    // The expiry index follows the replaced row: expired at 30 + TTL, not before.
    EXPECT_EQ(replica->expire(30 + 24 * 3600 * 30 - 1), 0u);
    EXPECT_EQ(replica->expire(30 + 24 * 3600 * 30 + 1), 1u);
}

TEST_F(LmdbStoreTest, AResetPageDropsEverythingFirst) {
    auto replica = xaps::open_lmdb_replica(options());
    xaps::ChangePage first;
    first.changes.push_back(upsert(9, seen_at(sample_registration("bob", "a1", "aa11"), 10, 10)));
    replica->apply(first);
    xaps::ChangePage reset;
    reset.reset = true;
    reset.changes.push_back(upsert(3, seen_at(sample_registration("carol", "c1", "cc33"), 10, 10)));
    replica->apply(reset);
    EXPECT_EQ(replica->applied_revision(), 3u);
    EXPECT_EQ(tokens_of(replica->all()), (std::set<std::string>{"cc33"}));
}

TEST_F(LmdbStoreTest, AReplicasRevisionSurvivesReopening) {
    {
        auto replica = xaps::open_lmdb_replica(options());
        xaps::ChangePage page;
        page.changes.push_back(
            upsert(42, seen_at(sample_registration("bob", "a1", "aa11"), 10, 10)));
        replica->apply(page);
    }
    auto replica = xaps::open_lmdb_replica(options());
    EXPECT_EQ(replica->applied_revision(), 42u);
    EXPECT_EQ(replica->size(), 1u);
}

TEST_F(LmdbStoreTest, AReplicaSkipsARowItCannotHoldButCountsItsRevision) {
    auto replica = xaps::open_lmdb_replica(options());
    xaps::ChangePage page;
    page.changes.push_back(upsert(1, seen_at(sample_registration("bob", "", "aa11"), 10, 10)));
    page.changes.push_back(upsert(2, seen_at(sample_registration("bob", "a1", "bb22"), 10, 10)));
    replica->apply(page);
    EXPECT_EQ(replica->applied_revision(), 2u);
    EXPECT_EQ(tokens_of(replica->all()), (std::set<std::string>{"bb22"}));
}

} // namespace

// --- Upgrade from schema version 1 ---------------------------------------------

// Registrations of every shape the old format held, with the fields an
// upgrade must keep: times, spelling of the user, ids that are and are not
// UUIDs or hex, other subtopics, both aps versions, many mailboxes.
std::vector<Registration> format1_shapes() {
    auto shape = [](std::string user, std::string account, std::string token,
                    std::vector<std::string> mailboxes, std::int64_t registered_at,
                    std::int64_t last_seen) {
        Registration registration = sample_registration(std::move(user), std::move(account),
                                                        std::move(token), std::move(mailboxes));
        registration.registered_at = registered_at;
        registration.last_seen = last_seen;
        return registration;
    };
    std::vector<Registration> shapes = {
        shape("alice", "0715A26B-CA09-4730-A419-793000CA982E",
              "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a",
              {"INBOX", "Sent Messages"}, 1700000000, 1700082800),
        shape("Alice", "0715a26b-ca09-4730-a419-793000ca982e", "00ff", {"INBOX"}, 1700000000,
              1700000000),
        shape("Bob@Example.ORG", "account with spaces", "not hex at all", {}, 1600000000,
              1700000100),
        shape("carol", "A", "abc", std::vector<std::string>(300, "Folder/Sub\xc3\xa9"), -5, 7),
    };
    shapes[2].subtopic = "com.example.other";
    shapes[3].aps_version = 1;
    shapes[3].subtopic = "";
    return shapes;
}

std::set<std::string> described(const std::vector<Registration> &registrations) {
    std::set<std::string> out;
    for (const Registration &r : registrations) {
        std::string line = r.user + "|" + r.account_id + "|" + r.device_token + "|" + r.subtopic +
                           "|" + std::to_string(r.aps_version) + "|" +
                           std::to_string(r.registered_at) + "|" + std::to_string(r.last_seen);
        for (const std::string &mailbox : r.mailboxes) {
            line += "|" + mailbox;
        }
        out.insert(line);
    }
    return out;
}

// What the store's environment holds, read without the product's code.
struct RawStore {
    std::uint32_t schema_version = 0;
    bool has_format1_databases = false;
    std::size_t format1_registrations = 0;
};

RawStore read_raw(const std::string &path) {
    RawStore raw;
    MDB_env *env = nullptr;
    EXPECT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, std::size_t{4} << 30);
    EXPECT_EQ(mdb_env_open(env, path.c_str(), MDB_RDONLY, 0600), 0);
    MDB_txn *txn = nullptr;
    EXPECT_EQ(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), 0);
    MDB_dbi dbi = 0;
    if (mdb_dbi_open(txn, "meta", 0, &dbi) == 0) {
        MDB_val key{14, const_cast<char *>("schema_version")};
        MDB_val value{};
        if (mdb_get(txn, dbi, &key, &value) == 0 && value.mv_size == 4) {
            const auto *bytes = static_cast<const unsigned char *>(value.mv_data);
            raw.schema_version = bytes[0] | bytes[1] << 8 | bytes[2] << 16 |
                                 static_cast<std::uint32_t>(bytes[3]) << 24;
        }
    }
    for (const char *name : {"registrations", "by_token", "by_last_seen"}) {
        if (mdb_dbi_open(txn, name, 0, &dbi) == 0) {
            raw.has_format1_databases = true;
            if (std::string_view(name) == "registrations") {
                MDB_stat stat{};
                mdb_stat(txn, dbi, &stat);
                raw.format1_registrations = stat.ms_entries;
            }
        }
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return raw;
}

TEST_F(LmdbStoreTest, UpgradesAStoreThatSchemaVersion1WroteKeepingEveryField) {
    const std::vector<Registration> shapes = format1_shapes();
    std::filesystem::create_directories(options().path);
    {
        xaps::test::Format1StoreWriter writer(options().path);
        for (const Registration &registration : shapes) {
            writer.add(registration);
        }
        writer.commit();
    }
    ASSERT_EQ(read_raw(options().path).schema_version, 1u);

    RecordedLog log;
    LmdbStoreOptions opts = options(16, std::chrono::seconds(1000));
    opts.log = log.sink();
    {
        auto store = xaps::open_lmdb_store(opts);
        EXPECT_EQ(described(store->all()), described(shapes));
        EXPECT_EQ(store->size(), shapes.size());
        // The new indexes answer for the moved registrations.
        EXPECT_EQ(described(store->find_user("ALICE", 1700000500)),
                  described({shapes[0], shapes[1]}));
        EXPECT_EQ(store->remove_token("00ff"), 1u);
        EXPECT_EQ(store->expire(1700000500), 1u); // carol, last seen at 7
        EXPECT_EQ(described(store->all()), described({shapes[0], shapes[2]}));
        store->put(sample_registration("bob@example.org", "account with spaces", "not hex at all"),
                   1700000200);
        auto bob = store->find_user("bob@example.org", 1700000200);
        ASSERT_EQ(bob.size(), 1u);
        EXPECT_EQ(bob[0].registered_at, 1600000000);
    }
    ASSERT_EQ(log.lines.size(), 2u);
    EXPECT_NE(log.lines[0].second.find("4 registrations"), std::string::npos)
        << log.lines[0].second;
    EXPECT_NE(log.lines[1].second.find("upgraded"), std::string::npos) << log.lines[1].second;
    const RawStore raw = read_raw(options().path);
    EXPECT_EQ(raw.schema_version, 2u);
    EXPECT_FALSE(raw.has_format1_databases);
    // Once upgraded, an open has nothing to do.
    log.lines.clear();
    EXPECT_EQ(xaps::open_lmdb_store(opts)->size(), 2u);
    EXPECT_TRUE(log.lines.empty());
}

// The upgrade is killed with SIGKILL, again and again, from the moment it
// starts until it has finished; each open goes on from where the last one
// died. Every registration is there once at the end.
TEST(LmdbStore, AnUpgradeKilledAtAnyPointLosesAndDuplicatesNothing) {
    TempDir dir(TempDir::memory_base());
    LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
    opts.path = dir.path();
    opts.max_devices_per_user = 0;
    opts.upgrade_batch_size = 500; // many commits, so many points to die between
    constexpr std::size_t count = 30000;
    std::vector<Registration> written;
    {
        xaps::test::Format1StoreWriter writer(opts.path);
        for (std::size_t i = 0; i < count; ++i) {
            Registration registration = numbered_registration(i, 2, 10);
            registration.account_id = "0715A26B-CA09-4730-A419-" + std::to_string(100000000000 + i);
            registration.registered_at = static_cast<std::int64_t>(i);
            registration.last_seen = static_cast<std::int64_t>(i * 7);
            writer.add(registration);
            written.push_back(std::move(registration));
        }
        writer.commit();
    }
    std::size_t interrupted = 0;
    // Each round lets the upgrade run a quarter longer before the kill.
    double kill_after_ms = 0.5;
    for (int round = 0; round < 60 && read_raw(opts.path).schema_version != 2;
         ++round, kill_after_ms *= 1.25) {
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(fds[0]);
            LmdbStoreOptions child = opts;
            // Told as the upgrade's first batch begins.
            child.log = [&](xaps::LogLevel, std::string_view message) {
                if (message.starts_with("upgrading") && ::write(fds[1], "u", 1) != 1) {
                    ::_exit(2);
                }
            };
            try {
                xaps::open_lmdb_store(child);
            } catch (...) {
                ::_exit(1);
            }
            ::_exit(0);
        }
        ::close(fds[1]);
        char started = 0;
        if (::read(fds[0], &started, 1) == 1) {
            ::usleep(static_cast<useconds_t>(kill_after_ms * 1000));
            ::kill(pid, SIGKILL);
        }
        ::close(fds[0]);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) != 0)
            << "the upgrade failed: exit " << WEXITSTATUS(status);
        const RawStore raw = read_raw(opts.path);
        if (raw.schema_version == 1 && raw.format1_registrations > 0 &&
            raw.format1_registrations < count) {
            ++interrupted;
        }
    }
    std::printf("upgrade interrupted part-way %zu times, finished after %.0f ms\n", interrupted,
                kill_after_ms);
    xaps::open_lmdb_store(opts); // finishes what the last kill left
    // Not while the store is open: LMDB allows one environment per file and
    // process, and closing a second one drops the first one's locks.
    EXPECT_EQ(read_raw(opts.path).schema_version, 2u);
    auto store = xaps::open_lmdb_store(opts);
    EXPECT_EQ(store->size(), count);
    EXPECT_EQ(described(store->all()), described(written));
    EXPECT_EQ(store->remove_token(token_of(17)), 1u);
    EXPECT_EQ(store->size(), count - 1);
}
