#include "store-migration.h"

#include "poll-event-loop.h"
#include "registration-store.h"
#include "shared-store-link.h"
#include "shared-registration-store.h"
#include "temporary-directory.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#ifdef XAPS_HAVE_PGSQL_STORE
#include "pgsql-registration-store.h"
#include "postgres-server.h"
#endif

#include <gtest/gtest.h>

#include <poll.h>

#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

using xaps::ErrorKind;
using xaps::LmdbStoreOptions;
using xaps::Registration;
using xaps::RegistrationStore;
namespace protocol = xaps::protocol;

constexpr std::int64_t now = 1700000000;

Registration registration(int index, std::int64_t registered_at, std::int64_t last_seen) {
    Registration reg;
    reg.user = "user" + std::to_string(index);
    reg.account_id = "account-" + std::to_string(index);
    std::string token = std::to_string(index);
    reg.device_token = std::string(16 - token.size(), '0') + token;
    reg.subtopic = "com.apple.mobilemail";
    reg.aps_version = 2;
    reg.mailboxes = {"INBOX", "Sent Messages"};
    reg.registered_at = registered_at;
    reg.last_seen = last_seen;
    return reg;
}

// The shared store's part in a migration is that of a RegistrationStore:
// this one keeps its registrations in LMDB and can be told to fail.
class LmdbBackedSharedStore : public xaps::SharedRegistrationStore {
public:
    explicit LmdbBackedSharedStore(std::unique_ptr<RegistrationStore> store)
        : store_(std::move(store)) {}

    bool unreachable = false;

    void put(const Registration &reg, std::int64_t at) override { store_->put(reg, at); }
    bool import(const Registration &reg) override { return store_->import(reg); }
    std::vector<ImportResult> import_batch(std::span<const Registration> regs) override {
        fail_if_unreachable();
        return store_->import_batch(regs);
    }
    std::vector<Registration> find_user(std::string_view user, std::int64_t at) override {
        return store_->find_user(user, at);
    }
    std::vector<Registration> all() override { return store_->all(); }
    std::size_t size() override { return store_->size(); }
    Page page_after(std::string_view user, std::string_view after, std::size_t max_rows,
                    std::int64_t at) override {
        fail_if_unreachable();
        return store_->page_after(user, after, max_rows, at);
    }
    std::size_t remove_user(std::string_view user) override { return store_->remove_user(user); }
    std::size_t remove_token(std::string_view token) override {
        return store_->remove_token(token);
    }
    std::size_t remove_all() override { return store_->remove_all(); }
    std::size_t remove_token_unless_seen_since(std::string_view token,
                                               std::int64_t since) override {
        return store_->remove_token_unless_seen_since(token, since);
    }
    std::size_t expire(std::int64_t at) override { return store_->expire(at); }
    xaps::ChangePage changes_after(std::uint64_t, std::size_t) override { return {}; }
    Wake wait(std::chrono::milliseconds timeout, int wake_fd) override {
        pollfd wake{wake_fd, POLLIN, 0};
        return ::poll(&wake, 1, static_cast<int>(timeout.count())) > 0 ? Wake::woken
                                                                       : Wake::timeout;
    }
    std::optional<std::size_t> expire_once(std::int64_t, std::chrono::seconds) override {
        return std::nullopt;
    }
    std::string last_error() const override { return {}; }

private:
    void fail_if_unreachable() const {
        if (unreachable) {
            throw xaps::Error(ErrorKind::unavailable, "connection refused");
        }
    }

    std::unique_ptr<RegistrationStore> store_;
};

// The store thread link, run by hand: a job waits until the test runs it,
// so the test sees how many jobs a migration queues at a time.
class HandRunLink {
public:
    explicit HandRunLink(xaps::SharedRegistrationStore &store) : store_(store) {}

    xaps::StoreMigrator::SubmitJob submitter() {
        return [this](std::function<void(xaps::SharedRegistrationStore &)> job,
                      std::function<void(const std::optional<xaps::Error> &)> done) {
            queue_.emplace_back(std::move(job), std::move(done));
        };
    }
    std::size_t queued() const { return queue_.size(); }
    void run_one() {
        auto [job, done] = std::move(queue_.front());
        queue_.pop_front();
        std::optional<xaps::Error> error;
        try {
            job(store_);
        } catch (const xaps::Error &e) {
            error = e;
        }
        done(error);
    }
    // Runs jobs until none is queued; returns how many ran.
    std::size_t run_all() {
        std::size_t ran = 0;
        while (!queue_.empty()) {
            EXPECT_LE(queue_.size(), 1U) << "a migration queues one page at a time";
            run_one();
            ++ran;
        }
        return ran;
    }

private:
    xaps::SharedRegistrationStore &store_;
    std::deque<std::pair<std::function<void(xaps::SharedRegistrationStore &)>,
                         std::function<void(const std::optional<xaps::Error> &)>>>
        queue_;
};

// Whether this process maps the LMDB data file under `directory`: LMDB
// allows one environment per file and process, so a migration must not
// leave the standalone store open.
bool maps_store_at(const std::string &directory) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    const std::string data_file = directory + "/data.mdb";
    while (std::getline(maps, line)) {
        if (line.size() >= data_file.size() &&
            line.compare(line.size() - data_file.size(), data_file.size(), data_file) == 0) {
            return true;
        }
    }
    return false;
}

class StoreMigrationTest : public ::testing::Test {
protected:
    LmdbStoreOptions options(const std::string &name) const {
        LmdbStoreOptions opts = LmdbStoreOptions::from(xaps::default_xaps_settings());
        opts.path = dir_.path() + "/" + name;
        opts.ttl = std::chrono::hours(24 * 30);
        opts.max_devices_per_user = 0;
        return opts;
    }
    std::unique_ptr<RegistrationStore> open(const std::string &name) const {
        return xaps::open_lmdb_store(options(name));
    }
    static void import_all(RegistrationStore &store, const std::vector<Registration> &regs) {
        for (const auto &result : store.import_batch(regs)) {
            ASSERT_FALSE(result.error.has_value());
            ASSERT_TRUE(result.added);
        }
    }

    // Memory-backed: each page is a commit, and the test makes several.
    xaps::test::TemporaryDirectory dir_{"xaps-migration-",
                                        xaps::test::TemporaryDirectory::memory_base()};
};

TEST_F(StoreMigrationTest, CopiesEveryPageKeepingTimesAndLeavingExistingKeys) {
    auto source = open("source");
    auto target = open("target");
    std::vector<Registration> regs;
    for (int i = 0; i < 2500; ++i) {
        regs.push_back(registration(i, now - 5000 - i, now - 100 - i));
    }
    import_all(*source, regs);
    // The target knows two of them already, seen later than the source has.
    import_all(*target,
               {registration(7, now - 50, now - 10), registration(2400, now - 50, now - 10)});

    xaps::StoreMigration migration(1000);
    int pages = 0;
    while (migration.copy_next_page(*source, *target, now)) {
        ++pages;
    }
    EXPECT_EQ(pages + 1, 3);
    EXPECT_TRUE(migration.finished());
    EXPECT_EQ(migration.counts().copied, 2498U);
    EXPECT_EQ(migration.counts().existing, 2U);
    EXPECT_FALSE(migration.copy_next_page(*source, *target, now));

    EXPECT_EQ(target->size(), 2500U);
    auto found = target->find_user("USER1234", now);
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0], registration(1234, now - 6234, now - 1334));
    found = target->find_user("user7", now);
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0].registered_at, now - 50);
    EXPECT_EQ(found[0].last_seen, now - 10);
    EXPECT_EQ(source->size(), 2500U);
}

TEST_F(StoreMigrationTest, LeavesExpiredRegistrationsBehind) {
    auto source = open("source");
    auto target = open("target");
    const std::int64_t ttl = 30 * 24 * 3600;
    import_all(*source, {registration(1, now - ttl - 100, now - ttl - 10),
                         registration(2, now - 100, now - 10)});
    xaps::StoreMigration migration;
    EXPECT_FALSE(migration.copy_next_page(*source, *target, now));
    EXPECT_EQ(migration.counts().copied, 1U);
    EXPECT_EQ(migration.counts().existing, 0U);
    EXPECT_EQ(target->size(), 1U);
    EXPECT_EQ(target->find_user("user2", now).size(), 1U);
}

TEST_F(StoreMigrationTest, AnEmptySourceIsOnePage) {
    auto source = open("source");
    auto target = open("target");
    xaps::StoreMigration migration;
    EXPECT_FALSE(migration.copy_next_page(*source, *target, now));
    EXPECT_EQ(migration.counts().copied, 0U);
    EXPECT_EQ(target->size(), 0U);
}

TEST_F(StoreMigrationTest, ARefusedRegistrationStopsTheCopyNamingIt) {
    auto source = open("source");
    import_all(*source,
               {registration(1, now - 100, now - 10), registration(2, now - 100, now - 10)});
    // A target that refuses user2's registration alone.
    class Refusing : public LmdbBackedSharedStore {
    public:
        using LmdbBackedSharedStore::LmdbBackedSharedStore;
        std::vector<ImportResult> import_batch(std::span<const Registration> regs) override {
            std::vector<ImportResult> results(regs.size());
            for (std::size_t i = 0; i < regs.size(); ++i) {
                if (regs[i].user == "user2") {
                    results[i].error = xaps::Error(ErrorKind::invalid_input, "invalid user name");
                } else {
                    results[i].added = true;
                }
            }
            return results;
        }
    } target(open("target"));
    xaps::StoreMigration migration;
    try {
        migration.copy_next_page(*source, target, now);
        ADD_FAILURE() << "no error";
    } catch (const xaps::Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::unavailable);
        EXPECT_STREQ(error.what(), "the registration of user 'user2', device token 00000000..., "
                                   "was not copied: invalid user name");
    }
    EXPECT_EQ(migration.counts().copied, 0U);
    EXPECT_FALSE(migration.finished());
}

class StoreMigratorTest : public StoreMigrationTest {
protected:
    StoreMigratorTest()
        : shared_(open("shared")), link_(shared_),
          migrator_(
              options("local"), link_.submitter(), [] { return now; },
              [this](xaps::LogLevel level, std::string_view line) {
                  log_.emplace_back(level, std::string(line));
              },
              1000) {}

    struct Answer {
        std::vector<protocol::Reply> replies;
        bool final() const {
            return !replies.empty() && replies.back().status != protocol::ReplyStatus::row;
        }
    };
    std::shared_ptr<Answer> migrate(std::uint64_t id, protocol::MigrationDirection direction) {
        auto answer = std::make_shared<Answer>();
        migrator_.handle(id, protocol::Migrate{direction},
                         [answer](protocol::Reply reply) { answer->replies.push_back(reply); });
        return answer;
    }
    static std::vector<std::string> encoded(const Answer &answer) {
        std::vector<std::string> lines;
        for (const auto &reply : answer.replies) {
            lines.push_back(protocol::encode_reply(reply));
        }
        return lines;
    }
    void fill(RegistrationStore &store, int first, int count) {
        std::vector<Registration> regs;
        for (int i = first; i < first + count; ++i) {
            regs.push_back(registration(i, now - 1000, now - 100));
        }
        import_all(store, regs);
    }

    std::vector<std::pair<xaps::LogLevel, std::string>> log_;
    LmdbBackedSharedStore shared_;
    HandRunLink link_;
    xaps::StoreMigrator migrator_;
};

TEST_F(StoreMigratorTest, ToSharedAnswersARowPerPageThenTheTotals) {
    {
        auto local = open("local");
        fill(*local, 0, 1500);
    }
    fill(shared_, 998, 2); // user998 and user999, last in order: already there
    auto answer = migrate(4, protocol::MigrationDirection::to_shared);
    EXPECT_TRUE(migrator_.running());
    EXPECT_EQ(link_.queued(), 1U);
    EXPECT_EQ(link_.run_all(), 2U);

    EXPECT_EQ(encoded(*answer),
              (std::vector<std::string>{"4\tROW\t1000\t0\n", "4\tOK\t1498\t2\n"}));
    EXPECT_FALSE(migrator_.running());
    EXPECT_FALSE(maps_store_at(options("local").path));
    EXPECT_EQ(shared_.size(), 1500U);
    EXPECT_EQ(shared_.find_user("user42", now).size(), 1U);
    ASSERT_EQ(log_.size(), 1U);
    EXPECT_EQ(log_[0].first, xaps::LogLevel::info);
    EXPECT_EQ(log_[0].second, "migration to the shared store done: 1498 registrations copied, 2 "
                              "there already");
}

TEST_F(StoreMigratorTest, ToLocalCopiesTheSharedStoreIntoTheStandaloneOne) {
    fill(shared_, 0, 3);
    {
        auto local = open("local");
        fill(*local, 2, 1);
    }
    auto answer = migrate(9, protocol::MigrationDirection::to_local);
    EXPECT_EQ(link_.run_all(), 1U);
    EXPECT_EQ(encoded(*answer), (std::vector<std::string>{"9\tOK\t2\t1\n"}));
    EXPECT_FALSE(maps_store_at(options("local").path));
    auto local = open("local");
    EXPECT_EQ(local->size(), 3U);
    auto found = local->find_user("user0", now);
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0], registration(0, now - 1000, now - 100));
}

TEST_F(StoreMigratorTest, OneMigrationAtATime) {
    {
        auto local = open("local");
        fill(*local, 0, 1001);
    }
    auto first = migrate(1, protocol::MigrationDirection::to_shared);
    auto second = migrate(2, protocol::MigrationDirection::to_local);
    ASSERT_TRUE(second->final());
    EXPECT_EQ(second->replies[0].error().kind(), ErrorKind::unavailable);
    EXPECT_STREQ(second->replies[0].error().what(),
                 "a migration is already running: wait for its doveadm xaps migrate to end");
    link_.run_all();
    EXPECT_EQ(encoded(*first), (std::vector<std::string>{"1\tROW\t1000\t0\n", "1\tOK\t1001\t0\n"}));

    // Over: the next one runs, and finds everything there.
    auto third = migrate(3, protocol::MigrationDirection::to_shared);
    link_.run_all();
    EXPECT_EQ(encoded(*third), (std::vector<std::string>{"3\tROW\t0\t1000\n", "3\tOK\t0\t1001\n"}));
}

TEST_F(StoreMigratorTest, AnUnreachableSharedStoreFailsTheRunAndARetryFinishesIt) {
    {
        auto local = open("local");
        fill(*local, 0, 2500);
    }
    auto answer = migrate(5, protocol::MigrationDirection::to_shared);
    link_.run_one();
    shared_.unreachable = true;
    link_.run_all();
    ASSERT_EQ(answer->replies.size(), 2U);
    EXPECT_EQ(protocol::encode_reply(answer->replies[0]), "5\tROW\t1000\t0\n");
    EXPECT_EQ(protocol::encode_reply(answer->replies[1]),
              "5\tFAIL\tunavailable\tconnection refused\n");
    EXPECT_FALSE(migrator_.running());
    EXPECT_FALSE(maps_store_at(options("local").path));
    EXPECT_EQ(shared_.size(), 1000U);
    ASSERT_EQ(log_.size(), 1U);
    EXPECT_EQ(log_[0].first, xaps::LogLevel::warning);
    EXPECT_EQ(log_[0].second, "migration to the shared store stopped after 1000 registrations "
                              "copied, 0 there already: connection refused");

    shared_.unreachable = false;
    auto retry = migrate(6, protocol::MigrationDirection::to_shared);
    link_.run_all();
    EXPECT_EQ(encoded(*retry),
              (std::vector<std::string>{"6\tROW\t0\t1000\n", "6\tROW\t1000\t1000\n",
                                        "6\tOK\t1500\t1000\n"}));
    EXPECT_EQ(shared_.size(), 2500U);
}

TEST_F(StoreMigratorTest, AFailedSubmitFailsTheRequest) {
    xaps::StoreMigrator refusing(
        options("local"),
        [](auto, auto) { throw xaps::Error(ErrorKind::unavailable, "store queue full"); },
        [] { return now; });
    std::vector<protocol::Reply> replies;
    refusing.handle(3, protocol::Migrate{protocol::MigrationDirection::to_shared},
                    [&replies](protocol::Reply reply) { replies.push_back(reply); });
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(protocol::encode_reply(replies[0]), "3\tFAIL\tunavailable\tstore queue full\n");
    EXPECT_FALSE(refusing.running());
}

TEST_F(StoreMigratorTest, AnUnopenableLocalStoreFailsTheRequest) {
    {
        std::ofstream blocker(dir_.path() + "/not-a-directory");
        blocker << "x";
    }
    auto opts = options("local");
    opts.path = dir_.path() + "/not-a-directory/db";
    xaps::StoreMigrator migrator(opts, link_.submitter(), [] { return now; });
    std::vector<protocol::Reply> replies;
    migrator.handle(8, protocol::Migrate{protocol::MigrationDirection::to_local},
                    [&replies](protocol::Reply reply) { replies.push_back(reply); });
    link_.run_all();
    ASSERT_EQ(replies.size(), 1U);
    EXPECT_EQ(replies[0].status, protocol::ReplyStatus::fail);
    EXPECT_NE(std::string(replies[0].error().what()).find("not-a-directory"), std::string::npos)
        << replies[0].error().what();
    EXPECT_FALSE(migrator.running());
}

// As the worker runs it: jobs on the link's store thread, replies on the loop.
TEST_F(StoreMigrationTest, RunsThroughTheWorkersLink) {
    {
        auto local = open("local");
        std::vector<Registration> regs;
        for (int i = 0; i < 1500; ++i) {
            regs.push_back(registration(i, now - 1000, now - 100));
        }
        import_all(*local, regs);
    }
    std::vector<std::string> replies;
    {
        xaps::PollEventLoop loop;
        auto replica = xaps::open_lmdb_replica(options("replica"));
        xaps::SharedStoreLink link(
            loop,
            [this](xaps::LogSink) {
                return std::make_unique<LmdbBackedSharedStore>(open("shared"));
            },
            *replica, xaps::SharedStoreLinkSettings{}, [](xaps::LogLevel, std::string_view) {});
        xaps::StoreMigrator migrator(options("local"), xaps::submit_through(link),
                                     [] { return now; });
        migrator.handle(3, protocol::Migrate{protocol::MigrationDirection::to_shared},
                        [&replies](protocol::Reply reply) {
                            replies.push_back(protocol::encode_reply(reply));
                        });
        ASSERT_TRUE(
            loop.run_until([&migrator] { return !migrator.running(); }, std::chrono::seconds(60)));
    }
    EXPECT_EQ(replies, (std::vector<std::string>{"3\tROW\t1000\t0\n", "3\tOK\t1500\t0\n"}));
    EXPECT_FALSE(maps_store_at(options("local").path));
    EXPECT_EQ(open("shared")->size(), 1500U);
}

#ifdef XAPS_HAVE_PGSQL_STORE

// The real pair: the standalone LMDB store into PostgreSQL and back into an
// empty LMDB store, through the migrator as the worker runs it.
TEST_F(StoreMigrationTest, LmdbToPostgresqlAndBack) {
    if (!xaps::test::PostgresServer::available()) {
        GTEST_SKIP() << "PostgreSQL is not installed";
    }
    xaps::test::PostgresServer server;
    xaps::SharedStoreOptions shared_options;
    shared_options.conninfo = server.conninfo();
    shared_options.timeout = std::chrono::seconds(30);
    shared_options.ttl = std::chrono::hours(24 * 30);
    auto shared = xaps::open_pgsql_store(shared_options);
    {
        auto local = open("local");
        std::vector<Registration> regs;
        for (int i = 0; i < 1200; ++i) {
            regs.push_back(registration(i, now - 5000 - i, now - 100 - i));
        }
        import_all(*local, regs);
    }
    // Already in the shared store, with other times: kept as it is.
    ASSERT_TRUE(shared->import(registration(3, now - 40, now - 20)));

    HandRunLink link(*shared);
    std::vector<std::string> to_shared;
    xaps::StoreMigrator migrator(options("local"), link.submitter(), [] { return now; });
    migrator.handle(1, protocol::Migrate{protocol::MigrationDirection::to_shared},
                    [&to_shared](protocol::Reply reply) {
                        to_shared.push_back(protocol::encode_reply(reply));
                    });
    EXPECT_EQ(link.run_all(), 2U);
    // Which page had the row already is PostgreSQL's order: only the totals.
    ASSERT_EQ(to_shared.size(), 2U);
    EXPECT_EQ(to_shared[1], "1\tOK\t1199\t1\n");
    EXPECT_EQ(shared->size(), 1200U);
    auto found = shared->find_user("user1100", now);
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0], registration(1100, now - 6100, now - 1200));
    found = shared->find_user("user3", now);
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0].registered_at, now - 40);

    auto back_options = options("back");
    xaps::StoreMigrator back(back_options, link.submitter(), [] { return now; });
    std::vector<std::string> to_local;
    back.handle(
        2, protocol::Migrate{protocol::MigrationDirection::to_local},
        [&to_local](protocol::Reply reply) { to_local.push_back(protocol::encode_reply(reply)); });
    EXPECT_EQ(link.run_all(), 2U);
    EXPECT_EQ(to_local, (std::vector<std::string>{"2\tROW\t1000\t0\n", "2\tOK\t1200\t0\n"}));
    auto copy = open("back");
    EXPECT_EQ(copy->size(), 1200U);
    found = copy->find_user("user1100", now);
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0], registration(1100, now - 6100, now - 1200));
}

#endif

} // namespace
