#include "store-writes.h"

#include "registration-store.h"
#include "sample-registration.h"
#include "temporary-directory.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace {

using xaps::Error;
using xaps::ErrorKind;
using xaps::LocalStoreWrites;
using xaps::PurgeScope;
using xaps::Registration;
using xaps::RegistrationStore;
using xaps::test::sample_registration;
using xaps::test::TemporaryDirectory;
using xaps::test::with_times;

Registration make_registration(const std::string &user, const std::string &token) {
    return with_times(sample_registration(user, "acct", token), 1700000000, 1700000000);
}

class LocalStoreWritesTest : public ::testing::Test {
protected:
    void SetUp() override {
        xaps::LmdbStoreOptions options;
        options.path = directory.path() + "/store";
        options.ttl = std::chrono::seconds(1000);
        store = xaps::open_lmdb_store(options);
    }

    TemporaryDirectory directory;
    std::unique_ptr<RegistrationStore> store;
};

TEST_F(LocalStoreWritesTest, WriteBatchAnswersDuringTheCall) {
    LocalStoreWrites writes(*store);
    std::optional<RegistrationStore::BatchResults> results;
    writes.write_batch({make_registration("alice", "aa11")}, 1700000100,
                       {make_registration("bob", "bb22")},
                       [&](RegistrationStore::BatchResults batch) { results = std::move(batch); });
    ASSERT_TRUE(results);
    ASSERT_EQ(results->puts.size(), 1u);
    EXPECT_FALSE(results->puts[0]);
    ASSERT_EQ(results->imports.size(), 1u);
    EXPECT_TRUE(results->imports[0].added);
    EXPECT_EQ(store->size(), 2u);
}

TEST_F(LocalStoreWritesTest, AnInvalidRegistrationFailsAlone) {
    LocalStoreWrites writes(*store);
    std::optional<RegistrationStore::BatchResults> results;
    writes.write_batch({make_registration("", "aa11"), make_registration("alice", "bb22")},
                       1700000100, {},
                       [&](RegistrationStore::BatchResults batch) { results = std::move(batch); });
    ASSERT_TRUE(results);
    ASSERT_EQ(results->puts.size(), 2u);
    EXPECT_TRUE(results->puts[0]);
    EXPECT_FALSE(results->puts[1]);
}

TEST_F(LocalStoreWritesTest, PurgeCountsWhatItRemoved) {
    LocalStoreWrites writes(*store);
    store->put(make_registration("alice", "aa11"), 1700000000);
    store->put(make_registration("alice", "bb22"), 1700000000);
    store->put(make_registration("bob", "cc33"), 1700000000);
    std::vector<std::size_t> counts;
    auto record = [&](const std::optional<Error> &error, std::size_t count) {
        EXPECT_FALSE(error);
        counts.push_back(count);
    };
    writes.purge(PurgeScope::token, "cc33", record);
    writes.purge(PurgeScope::user, "ALICE", record);
    writes.purge(PurgeScope::all, "", record);
    EXPECT_EQ(counts, (std::vector<std::size_t>{1, 2, 0}));
}

TEST_F(LocalStoreWritesTest, GoneTokensAndExpiry) {
    LocalStoreWrites writes(*store);
    store->put(make_registration("alice", "aa11"), 1700000000);
    store->put(make_registration("bob", "bb22"), 1700000500);
    std::vector<std::size_t> counts;
    auto record = [&](const std::optional<Error> &error, std::size_t count) {
        EXPECT_FALSE(error);
        counts.push_back(count);
    };
    // Seen after Apple's timestamp: kept.
    writes.remove_gone_tokens({RegistrationStore::GoneToken{"bb22", 1700000400}}, record);
    writes.expire(1700001200, record); // alice's last_seen is 1200 s old, the TTL 1000 s
    EXPECT_EQ(counts, (std::vector<std::size_t>{0, 1}));
    EXPECT_EQ(store->size(), 1u);
}

} // namespace
