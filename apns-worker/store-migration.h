// `doveadm xaps migrate`: copies every registration from the standalone LMDB
// store at xaps_db_path into the shared store, or back, with import
// semantics (added unless the key exists, times kept). The copy runs on the
// worker's store thread, the only place that may call the shared store, one
// page per job so that REGISTERs, purges and replica updates queued meanwhile
// interleave with it instead of waiting for the whole store.
#pragma once

#include "log-sink.h"
#include "registration-store.h"
#include "shared-registration-store.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace xaps {

class SharedStoreLink;

struct MigrationCounts {
    std::size_t copied = 0;
    std::size_t existing = 0; // the target had the key: left as it was
};

// A walk through the source store's listing order, one page per call, with
// no transaction held between pages: registrations written meanwhile may or
// may not be copied, every one present throughout is.
class StoreMigration {
public:
    static constexpr std::size_t default_page_rows = 1000;

    explicit StoreMigration(std::size_t page_rows = default_page_rows) : page_rows_(page_rows) {}

    // Imports the next page of `source` into `target` (one durable commit),
    // skipping registrations expired at `now`. Returns false when the walk
    // is over. Throws what the stores throw, and Error(unavailable) with the
    // first refused registration's reason when the target refuses one (a
    // copy that leaves registrations behind must not look complete).
    bool copy_next_page(RegistrationStore &source, RegistrationStore &target, std::int64_t now);

    const MigrationCounts &counts() const { return counts_; }
    bool finished() const { return finished_; }

private:
    std::size_t page_rows_;
    std::string after_;
    bool finished_ = false;
    MigrationCounts counts_;
};

// Runs MIGRATE requests on the store thread, through the shared store link.
class StoreMigrator {
public:
    // Runs `job` on the store thread with the shared store, then `done` on
    // the event loop with the job's exception as an Error, if any: the
    // store thread link's submit() with no deadline (a page is copied
    // however long the database takes; the client's silence timeout bounds
    // the wait). `done` may be dropped uncalled only when the link itself
    // goes away.
    using SubmitJob = std::function<void(std::function<void(SharedRegistrationStore &)> job,
                                         std::function<void(const std::optional<Error> &)> done)>;
    using Reply = std::function<void(protocol::Reply)>;

    // `local` names the standalone LMDB store (LmdbStoreOptions::from() of
    // the worker's settings). A job opens it and the job that ends the
    // migration closes it: LMDB allows one environment per file and
    // process, and the worker keeps none on it while the shared store is in
    // use (its replica is a store of its own). `log` hears, from the loop,
    // how each migration ended.
    StoreMigrator(LmdbStoreOptions local, SubmitJob submit, std::function<std::int64_t()> unix_now,
                  LogSink log = {}, std::size_t page_rows = StoreMigration::default_page_rows);
    ~StoreMigrator();
    StoreMigrator(const StoreMigrator &) = delete;
    StoreMigrator &operator=(const StoreMigrator &) = delete;

    // Answers `reply` with ROW <copied> <existing> after each page but the
    // last, then OK <copied> <existing>, or FAIL: unavailable at once while
    // another migration runs. The copy goes on when the peer goes away
    // (`reply` must then drop what it is given). Never throws.
    void handle(std::uint64_t id, const protocol::Migrate &request, const Reply &reply) noexcept;

    bool running() const { return *running_; }

private:
    struct Run;
    static void submit_page(const std::shared_ptr<Run> &run);
    static void page_done(const std::shared_ptr<Run> &run, const std::optional<Error> &error);

    LmdbStoreOptions local_;
    SubmitJob submit_;
    std::function<std::int64_t()> unix_now_;
    LogSink log_;
    std::size_t page_rows_;
    // Shared with the run in flight, which may end after the migrator.
    std::shared_ptr<bool> running_ = std::make_shared<bool>(false);
};

// StoreMigrator's SubmitJob over the worker's link (shared-store-link.h),
// which must outlive what it returns.
StoreMigrator::SubmitJob submit_through(SharedStoreLink &link);

} // namespace xaps
