#include "group-commit.h"
#include "temporary-directory.h"
#include "poll-event-loop.h"
#include "registration-store.h"
#include "sample-registration.h"
#include "xaps-error.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace {

using xaps::test::TemporaryDirectory;

using namespace std::chrono_literals;
using xaps::Error;
using xaps::ErrorKind;
using xaps::GroupCommit;
using xaps::Registration;
using xaps::test::sample_registration;

Registration make_registration(const std::string &user, const std::string &token) {
    return sample_registration(user, "acct", token);
}

// Counts put_batch() calls and can fail them, around a real LMDB store.
class CountingStore final : public xaps::RegistrationStore {
public:
    explicit CountingStore(xaps::RegistrationStore &inner) : inner_(inner) {}

    std::vector<std::size_t> batch_sizes;
    std::vector<std::size_t> import_batch_sizes;
    std::optional<Error> fail_with;

    std::vector<std::optional<Error>> put_batch(std::span<const Registration> registrations,
                                                std::int64_t now) override {
        batch_sizes.push_back(registrations.size());
        if (fail_with) {
            throw *fail_with;
        }
        return inner_.put_batch(registrations, now);
    }
    void put(const Registration &registration, std::int64_t now) override {
        inner_.put(registration, now);
    }
    bool import(const Registration &registration) override { return inner_.import(registration); }
    std::vector<ImportResult> import_batch(std::span<const Registration> registrations) override {
        import_batch_sizes.push_back(registrations.size());
        if (fail_with) {
            throw *fail_with;
        }
        return inner_.import_batch(registrations);
    }
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
    std::size_t remove_token(std::string_view token) override { return inner_.remove_token(token); }
    std::size_t remove_all() override { return inner_.remove_all(); }
    std::size_t remove_token_unless_seen_since(std::string_view token,
                                               std::int64_t since) override {
        return inner_.remove_token_unless_seen_since(token, since);
    }
    std::size_t expire(std::int64_t now) override { return inner_.expire(now); }

private:
    xaps::RegistrationStore &inner_;
};

class GroupCommitTest : public ::testing::Test {
protected:
    GroupCommitTest() {
        auto options = xaps::LmdbStoreOptions::from(xaps::default_xaps_settings());
        options.path = dir_.path() + "/db";
        options.max_devices_per_user = 0;
        lmdb_ = xaps::open_lmdb_store(options);
        store_.emplace(*lmdb_);
    }

    // One answer per put, in the order they came.
    struct Answers {
        std::vector<std::string> tokens;
        std::vector<std::optional<Error>> errors;
    };
    GroupCommit::Done record(Answers &answers, const std::string &token) {
        return [&answers, token](const std::optional<Error> &error) {
            answers.tokens.push_back(token);
            answers.errors.push_back(error);
        };
    }

    static constexpr std::int64_t now = 1700000000;

    TemporaryDirectory dir_{"xaps-group-commit-",
                            TemporaryDirectory::memory_base()}; // batching, not fsync, is tested
    std::unique_ptr<xaps::RegistrationStore> lmdb_;
    std::optional<CountingStore> store_;
    xaps::PollEventLoop loop_;
};

TEST_F(GroupCommitTest, PutsOfOneTurnShareOneCommitAndAreAnsweredAfterIt) {
    GroupCommit commit(loop_, *store_, [] { return now; });
    Answers answers;
    for (int i = 0; i < 16; ++i) {
        std::string token = "t" + std::to_string(i);
        commit.put(make_registration("user" + std::to_string(i), token), record(answers, token));
    }
    EXPECT_TRUE(answers.tokens.empty()) << "answered from within put()";
    EXPECT_EQ(commit.pending(), 16u);
    EXPECT_EQ(store_->size(), 0u) << "written before the turn ended";

    ASSERT_TRUE(loop_.run_until([&] { return answers.tokens.size() == 16; }, 5s));
    EXPECT_EQ(store_->batch_sizes, (std::vector<std::size_t>{16}));
    for (std::size_t i = 0; i < answers.errors.size(); ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(answers.tokens[i], "t" + std::to_string(i));
        EXPECT_FALSE(answers.errors[i].has_value());
    }
    EXPECT_EQ(store_->size(), 16u);
    auto stored = store_->find_user("user3", now);
    ASSERT_EQ(stored.size(), 1u);
    EXPECT_EQ(stored[0].last_seen, now);
    EXPECT_EQ(commit.pending(), 0u);
    EXPECT_EQ(commit.counters().commits, 1u);
    EXPECT_EQ(commit.counters().registrations, 16u);
    EXPECT_EQ(commit.counters().largest_batch, 16u);
}

TEST_F(GroupCommitTest, BatchesFollowTurnsAndTheBatchLimit) {
    struct Row {
        const char *what;
        std::vector<std::size_t> puts_per_turn;
        std::size_t max_batch;
        std::vector<std::size_t> expected_batches;
    };
    const Row rows[] = {
        {"one put per turn: one commit each", {1, 1, 1}, 512, {1, 1, 1}},
        {"turns of different sizes", {3, 1, 5}, 512, {3, 1, 5}},
        {"a turn beyond the limit commits in parts", {7}, 3, {3, 3, 1}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.what);
        store_->batch_sizes.clear();
        GroupCommit commit(
            loop_, *store_, [] { return now; }, row.max_batch);
        Answers answers;
        std::size_t expected_answers = 0;
        for (std::size_t puts : row.puts_per_turn) {
            for (std::size_t i = 0; i < puts; ++i) {
                std::string token = "t" + std::to_string(expected_answers++);
                commit.put(make_registration("user", token), record(answers, token));
            }
            ASSERT_TRUE(
                loop_.run_until([&] { return answers.tokens.size() == expected_answers; }, 5s));
        }
        EXPECT_EQ(store_->batch_sizes, row.expected_batches);
        for (const auto &error : answers.errors) {
            EXPECT_FALSE(error.has_value());
        }
    }
}

TEST_F(GroupCommitTest, AnInvalidRegistrationFailsAloneAndOthersAreStored) {
    GroupCommit commit(loop_, *store_, [] { return now; });
    Answers answers;
    commit.put(make_registration("alice", "a1"), record(answers, "a1"));
    commit.put(make_registration("", "empty-user"), record(answers, "empty-user"));
    commit.put(make_registration("bob", "b1"), record(answers, "b1"));
    ASSERT_TRUE(loop_.run_until([&] { return answers.tokens.size() == 3; }, 5s));
    EXPECT_EQ(answers.tokens, (std::vector<std::string>{"a1", "empty-user", "b1"}));
    EXPECT_FALSE(answers.errors[0].has_value());
    ASSERT_TRUE(answers.errors[1].has_value());
    EXPECT_EQ(answers.errors[1]->kind(), ErrorKind::invalid_input);
    EXPECT_FALSE(answers.errors[2].has_value());
    EXPECT_EQ(store_->size(), 2u);
}

TEST_F(GroupCommitTest, AFailedCommitFailsEveryPutOfTheBatch) {
    store_->fail_with = Error(ErrorKind::unavailable, "disk full");
    GroupCommit commit(loop_, *store_, [] { return now; });
    Answers answers;
    commit.put(make_registration("alice", "a1"), record(answers, "a1"));
    commit.put(make_registration("bob", "b1"), record(answers, "b1"));
    ASSERT_TRUE(loop_.run_until([&] { return answers.tokens.size() == 2; }, 5s));
    for (const auto &error : answers.errors) {
        ASSERT_TRUE(error.has_value());
        EXPECT_EQ(error->kind(), ErrorKind::unavailable);
        EXPECT_STREQ(error->what(), "disk full");
    }
    EXPECT_EQ(store_->size(), 0u);

    store_->fail_with.reset(); // the next batch is not affected
    commit.put(make_registration("carol", "c1"), record(answers, "c1"));
    ASSERT_TRUE(loop_.run_until([&] { return answers.tokens.size() == 3; }, 5s));
    EXPECT_FALSE(answers.errors[2].has_value());
    EXPECT_EQ(store_->size(), 1u);
}

TEST_F(GroupCommitTest, APutFromAnAnswerJoinsTheNextBatch) {
    GroupCommit commit(loop_, *store_, [] { return now; });
    Answers answers;
    commit.put(make_registration("alice", "a1"), [&](const std::optional<Error> &error) {
        record(answers, "a1")(error);
        commit.put(make_registration("alice", "a2"), record(answers, "a2"));
    });
    commit.put(make_registration("bob", "b1"), record(answers, "b1"));
    ASSERT_TRUE(loop_.run_until([&] { return answers.tokens.size() == 3; }, 5s));
    EXPECT_EQ(answers.tokens, (std::vector<std::string>{"a1", "b1", "a2"}));
    EXPECT_EQ(store_->batch_sizes, (std::vector<std::size_t>{2, 1}));
    EXPECT_EQ(store_->size(), 3u);
}

TEST_F(GroupCommitTest, AnAnswerThatThrowsDoesNotStopTheOthers) {
    GroupCommit commit(loop_, *store_, [] { return now; });
    Answers answers;
    commit.put(make_registration("alice", "a1"),
               [](const std::optional<Error> &) { throw std::runtime_error("peer gone"); });
    commit.put(make_registration("bob", "b1"), record(answers, "b1"));
    ASSERT_TRUE(loop_.run_until([&] { return answers.tokens.size() == 1; }, 5s));
    EXPECT_FALSE(answers.errors[0].has_value());
    EXPECT_EQ(store_->size(), 2u);
}

TEST_F(GroupCommitTest, DestroyedBeforeItsTurnEndsItStoresAndAnswersNothing) {
    Answers answers;
    {
        GroupCommit commit(loop_, *store_, [] { return now; });
        commit.put(make_registration("alice", "a1"), record(answers, "a1"));
    }
    loop_.run_once(10ms);
    EXPECT_TRUE(answers.tokens.empty());
    EXPECT_TRUE(store_->batch_sizes.empty());
    EXPECT_EQ(loop_.watch_count(), 0u);
}

} // namespace

namespace {

Registration exported(const std::string &user, const std::string &token) {
    return xaps::test::with_times(make_registration(user, token), 1600000000, 1600000100);
}

// "imported", "exists" or the error's kind, per import, in answer order.
struct ImportAnswers {
    std::vector<std::string> outcomes;
};
GroupCommit::ImportDone record_import(ImportAnswers &answers) {
    return [&answers](const xaps::RegistrationStore::ImportResult &result) {
        answers.outcomes.push_back(
            result.error   ? "error " + std::string(xaps::error_kind_name(result.error->kind()))
            : result.added ? "imported"
                           : "exists");
    };
}

} // namespace

TEST_F(GroupCommitTest, ImportsOfOneTurnShareOneCommitAndAreAnsweredAfterIt) {
    ASSERT_TRUE(lmdb_->import(exported("before", "t0")));
    GroupCommit commit(loop_, *store_, [] { return now; });
    ImportAnswers answers;
    commit.import(exported("alice", "t1"), record_import(answers));
    commit.import(exported("before", "t0"), record_import(answers)); // stored earlier
    commit.import(exported("", "t2"), record_import(answers));       // invalid
    commit.import(exported("ALICE", "t1"), record_import(answers));  // same batch
    commit.import(exported("bob", "t3"), record_import(answers));
    EXPECT_TRUE(answers.outcomes.empty()) << "answered from within import()";
    EXPECT_EQ(commit.pending(), 5u);
    EXPECT_EQ(store_->size(), 1u) << "written before the turn ended";

    ASSERT_TRUE(loop_.run_until([&] { return answers.outcomes.size() == 5; }, 5s));
    EXPECT_EQ(answers.outcomes, (std::vector<std::string>{"imported", "exists", "error invalid",
                                                          "exists", "imported"}));
    EXPECT_EQ(store_->import_batch_sizes, (std::vector<std::size_t>{5}));
    EXPECT_EQ(commit.counters().commits, 1u);
    EXPECT_EQ(commit.counters().imports, 5u);
    EXPECT_EQ(commit.counters().registrations, 0u);
    EXPECT_EQ(store_->size(), 3u);
    auto alice = store_->find_user("alice", 1600000100);
    ASSERT_EQ(alice.size(), 1u);
    EXPECT_EQ(alice[0].last_seen, 1600000100) << "an import keeps its times";

    // Across batches: the next turn's import of a key now stored.
    commit.import(exported("bob", "t3"), record_import(answers));
    ASSERT_TRUE(loop_.run_until([&] { return answers.outcomes.size() == 6; }, 5s));
    EXPECT_EQ(answers.outcomes.back(), "exists");
    EXPECT_EQ(commit.counters().commits, 2u);
}

TEST_F(GroupCommitTest, ALongImportCommitsOneBatchPerTurnWithThatTurnsPuts) {
    GroupCommit commit(
        loop_, *store_, [] { return now; }, 4);
    ImportAnswers imports;
    for (int i = 0; i < 10; ++i) {
        commit.import(exported("importer", "i" + std::to_string(i)), record_import(imports));
    }
    Answers puts;
    commit.put(make_registration("phone", "p0"), record(puts, "p0"));
    ASSERT_TRUE(loop_.run_until([&] { return !puts.tokens.empty(); }, 5s));
    EXPECT_EQ(commit.counters().commits, 1u);
    EXPECT_EQ(store_->batch_sizes, (std::vector<std::size_t>{1}));
    // The put and the first batch of imports in one commit; the rest wait
    // for later turns.
    EXPECT_EQ(store_->import_batch_sizes, (std::vector<std::size_t>{4}));
    EXPECT_EQ(imports.outcomes.size(), 4u);

    commit.put(make_registration("phone", "p1"), record(puts, "p1"));
    ASSERT_TRUE(loop_.run_until([&] { return imports.outcomes.size() == 10; }, 5s));
    EXPECT_EQ(store_->import_batch_sizes, (std::vector<std::size_t>{4, 4, 2}));
    EXPECT_EQ(puts.tokens, (std::vector<std::string>{"p0", "p1"}));
    EXPECT_EQ(commit.counters().commits, 3u);
    EXPECT_EQ(commit.counters().largest_batch, 5u); // a put and 4 imports
    EXPECT_EQ(imports.outcomes, std::vector<std::string>(10, "imported"));
}

TEST_F(GroupCommitTest, AFailedImportCommitFailsEveryImportOfTheBatch) {
    store_->fail_with = Error(ErrorKind::unavailable, "disk full");
    GroupCommit commit(loop_, *store_, [] { return now; });
    ImportAnswers answers;
    commit.import(exported("alice", "t1"), record_import(answers));
    commit.import(exported("bob", "t2"), record_import(answers));
    ASSERT_TRUE(loop_.run_until([&] { return answers.outcomes.size() == 2; }, 5s));
    EXPECT_EQ(answers.outcomes,
              (std::vector<std::string>{"error unavailable", "error unavailable"}));
    EXPECT_EQ(commit.counters().imports, 2u);
}

namespace {

// Answers each batch only when the test says so, as a shared store would.
class DeferredWrites final : public xaps::StoreWrites {
public:
    void write_batch(std::vector<Registration> puts, std::int64_t, std::vector<Registration>,
                     BatchDone done) override {
        batch_sizes.push_back(puts.size());
        pending.push_back(std::move(done));
    }
    void purge(xaps::PurgeScope, std::string, CountDone) override {}
    void remove_gone_tokens(std::vector<xaps::RegistrationStore::GoneToken>, CountDone) override {}
    void expire(std::int64_t, CountDone) override {}

    std::vector<std::size_t> batch_sizes;
    std::vector<BatchDone> pending;
};

TEST(GroupCommitWrites, ABatchIsAnsweredWhenItsWriteIsAndTheNextGoesOutMeanwhile) {
    xaps::PollEventLoop loop;
    DeferredWrites writes;
    GroupCommit commit(loop, writes, [] { return std::int64_t{1700000000}; });
    std::vector<int> answered;
    commit.put(make_registration("alice", "aa11"),
               [&](const std::optional<Error> &error) { answered.push_back(error ? -1 : 1); });
    loop.run_until([&] { return writes.pending.size() == 1; }, 5s);
    commit.put(make_registration("bob", "bb22"),
               [&](const std::optional<Error> &error) { answered.push_back(error ? -2 : 2); });
    loop.run_until([&] { return writes.pending.size() == 2; }, 5s);
    ASSERT_EQ(writes.batch_sizes, (std::vector<std::size_t>{1, 1}));
    EXPECT_TRUE(answered.empty());

    xaps::RegistrationStore::BatchResults second;
    second.puts.emplace_back(Error(ErrorKind::unavailable, "database down"));
    writes.pending[1](std::move(second));
    xaps::RegistrationStore::BatchResults first;
    first.puts.emplace_back();
    writes.pending[0](std::move(first));
    EXPECT_EQ(answered, (std::vector<int>{-2, 1}));
}

TEST(GroupCommitWrites, AnAnswerAfterTheGroupCommitIsGoneIsDropped) {
    xaps::PollEventLoop loop;
    DeferredWrites writes;
    bool answered = false;
    {
        GroupCommit commit(loop, writes, [] { return std::int64_t{1700000000}; });
        commit.put(make_registration("alice", "aa11"),
                   [&](const std::optional<Error> &) { answered = true; });
        loop.run_until([&] { return writes.pending.size() == 1; }, 5s);
    }
    xaps::RegistrationStore::BatchResults results;
    results.puts.emplace_back();
    writes.pending[0](std::move(results));
    EXPECT_FALSE(answered);
}

} // namespace
