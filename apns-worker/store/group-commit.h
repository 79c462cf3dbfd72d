// Group commit for registrations: the puts that arrive within one event-loop
// turn are written in one store transaction, so a burst of N REGISTERs costs
// one durable commit (LMDB: two fdatasyncs) instead of N. Each caller hears
// back only after the commit holding its registration, so "no error" still
// means durable, as the worker protocol's OK promises.
//
// The commit runs from a zero-delay timer: on Dovecot's ioloop and on
// PollEventLoop that is after every fd callback of the current turn, so all
// the REGISTERs read in one turn share it. While a commit blocks on fsync,
// further requests queue in the sockets and form the next batch: under load
// the batch grows by itself, when idle a put costs one commit as before.
//
// Imports (an admin restoring an export) go the same way, in the same
// transaction, but at most max_batch per turn: a long import then leaves the
// event loop free between its commits for the REGISTERs that arrive
// meanwhile, and each REGISTER waits for at most the commit under way and
// its own.
#pragma once

#include "event-loop.h"
#include "registration-store.h"
#include "store-writes.h"
#include "xaps-error.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace xaps {

class GroupCommit {
public:
    // nullopt: stored and durable; otherwise why not (the store's Error).
    using Done = std::function<void(const std::optional<Error> &error)>;

    // max_batch bounds one transaction; more pending puts commit in several.
    // Writes to `store` synchronously (LocalStoreWrites).
    GroupCommit(EventLoop &loop, RegistrationStore &store, std::function<std::int64_t()> unix_now,
                std::size_t max_batch = 512);
    // Writes through `writes`, which must outlive this; with a shared store
    // a batch is answered later, and further batches go out meanwhile.
    GroupCommit(EventLoop &loop, StoreWrites &writes, std::function<std::int64_t()> unix_now,
                std::size_t max_batch = 512);
    // Puts not committed yet are dropped without calling `done`: their
    // owner is going away too.
    ~GroupCommit();
    GroupCommit(const GroupCommit &) = delete;
    GroupCommit &operator=(const GroupCommit &) = delete;

    // Stores the registration at the end of this event-loop turn, like
    // RegistrationStore::put() with `now` taken at commit time. `done` is
    // called exactly once, from the event loop, never from within put(); it
    // may call put() again (that put joins the next batch).
    void put(Registration registration, Done done);

    using ImportDone = std::function<void(const RegistrationStore::ImportResult &result)>;
    // Imports the registration like RegistrationStore::import() at the end
    // of this turn, or a later one: at most max_batch imports commit per
    // turn, in the transaction of that turn's (first max_batch) puts. `done`
    // is called like put()'s.
    void import(Registration registration, ImportDone done);

    // Puts and imports waiting for their commit.
    std::size_t pending() const noexcept { return pending_.size() + pending_imports_.size(); }

    struct Counters {
        std::uint64_t commits = 0;       // transactions attempted
        std::uint64_t registrations = 0; // puts answered, failed ones included
        std::uint64_t imports = 0;       // imports answered, failed ones included
        std::size_t largest_batch = 0;
    };
    Counters counters() const noexcept { return counters_; }

private:
    struct Pending {
        Registration registration;
        Done done;
    };

    struct PendingImport {
        Registration registration;
        ImportDone done;
    };

    void schedule_commit();
    void commit_pending() noexcept;
    // One transaction.
    void commit_batch(std::vector<Pending> &puts, std::vector<PendingImport> &imports) noexcept;
    void answer_batch(std::vector<Pending> &puts, std::vector<PendingImport> &imports,
                      RegistrationStore::BatchResults &results) noexcept;

    EventLoop &loop_;
    std::unique_ptr<StoreWrites> own_writes_; // with the RegistrationStore constructor
    StoreWrites &writes_;
    std::function<std::int64_t()> unix_now_;
    std::size_t max_batch_;
    std::vector<Pending> pending_;
    std::deque<PendingImport> pending_imports_;
    std::unique_ptr<EventLoop::Watch> commit_timer_;
    Counters counters_;
    // Answers that come after this is gone are dropped: they hold this weakly.
    std::shared_ptr<char> alive_ = std::make_shared<char>();
};

} // namespace xaps
