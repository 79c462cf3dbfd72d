#include "store-migration.h"

#include "shared-store-link.h"

#include <utility>
#include <vector>

namespace xaps {

namespace {

std::vector<std::string> count_fields(const MigrationCounts &counts) {
    return {std::to_string(counts.copied), std::to_string(counts.existing)};
}

} // namespace

bool StoreMigration::copy_next_page(RegistrationStore &source, RegistrationStore &target,
                                    std::int64_t now) {
    if (finished_) {
        return false;
    }
    RegistrationStore::Page page = source.page_after({}, after_, page_rows_, now);
    if (!page.registrations.empty()) {
        const auto results = target.import_batch(page.registrations);
        MigrationCounts counts = counts_;
        for (std::size_t i = 0; i < results.size(); ++i) {
            if (results[i].error) {
                const Registration &refused = page.registrations[i];
                throw Error(ErrorKind::unavailable,
                            "the registration of user '" + refused.user + "', device token " +
                                refused.device_token.substr(0, 8) +
                                "..., was not copied: " + results[i].error->what());
            }
            ++(results[i].added ? counts.copied : counts.existing);
        }
        // Counted only once the whole page is in: a page that fails is
        // copied again in full by the next run, as "already there" where it
        // was written.
        counts_ = counts;
    }
    after_ = std::move(page.next_after);
    finished_ = after_.empty();
    return !finished_;
}

struct StoreMigrator::Run {
    LmdbStoreOptions local_options;
    SubmitJob submit;
    std::shared_ptr<bool> running;
    protocol::MigrationDirection direction;
    std::uint64_t id;
    Reply reply;
    std::int64_t now;
    StoreMigration migration;
    // Touched only by jobs on the store thread; closed there by the job
    // that ends the run, or wherever the run is dropped.
    std::unique_ptr<RegistrationStore> local;
    std::optional<Error> job_error;
    LogSink log;

    void finish(protocol::Reply final_reply) {
        *running = false;
        if (log) {
            const char *name = direction == protocol::MigrationDirection::to_shared
                                   ? "to the shared store"
                                   : "to the local store";
            const MigrationCounts &counts = migration.counts();
            const std::string totals = std::to_string(counts.copied) + " registrations copied, " +
                                       std::to_string(counts.existing) + " there already";
            if (final_reply.status == protocol::ReplyStatus::fail) {
                log(LogLevel::warning, std::string("migration ") + name + " stopped after " +
                                           totals + ": " + final_reply.error().what());
            } else {
                log(LogLevel::info, std::string("migration ") + name + " done: " + totals);
            }
        }
        try {
            reply(std::move(final_reply));
        } catch (...) {
            // The peer's transport failed: nobody is left to tell.
        }
    }
};

StoreMigrator::StoreMigrator(LmdbStoreOptions local, SubmitJob submit,
                             std::function<std::int64_t()> unix_now, LogSink log,
                             std::size_t page_rows)
    : local_(std::move(local)), submit_(std::move(submit)), unix_now_(std::move(unix_now)),
      log_(std::move(log)), page_rows_(page_rows) {}

StoreMigrator::~StoreMigrator() = default;

void StoreMigrator::handle(std::uint64_t id, const protocol::Migrate &request,
                           const Reply &reply) noexcept {
    try {
        if (*running_) {
            reply(protocol::Reply::fail(
                id, ErrorKind::unavailable,
                "a migration is already running: wait for its doveadm xaps migrate to end"));
            return;
        }
        // One `now` for the whole copy: a registration expiring during it
        // is copied or not, either is right.
        auto run = std::make_shared<Run>(Run{local_, submit_, running_, request.direction, id,
                                             reply, unix_now_(), StoreMigration(page_rows_),
                                             nullptr, std::nullopt, log_});
        *running_ = true;
        submit_page(run);
    } catch (...) {
        *running_ = false;
        try {
            reply(protocol::Reply::fail(id, current_exception_as_error()));
        } catch (...) {
        }
    }
}

void StoreMigrator::submit_page(const std::shared_ptr<Run> &run) {
    try {
        run->submit(
            [run](SharedRegistrationStore &shared) {
                try {
                    if (!run->local) {
                        run->local = open_lmdb_store(run->local_options);
                    }
                    const bool to_shared =
                        run->direction == protocol::MigrationDirection::to_shared;
                    RegistrationStore &source = to_shared ? *run->local : shared;
                    RegistrationStore &target =
                        to_shared ? static_cast<RegistrationStore &>(shared) : *run->local;
                    run->migration.copy_next_page(source, target, run->now);
                } catch (...) {
                    run->job_error = current_exception_as_error();
                }
                if (run->job_error || run->migration.finished()) {
                    run->local.reset();
                }
            },
            [run](const std::optional<Error> &error) { page_done(run, error); });
    } catch (...) {
        run->finish(protocol::Reply::fail(run->id, current_exception_as_error()));
    }
}

void StoreMigrator::page_done(const std::shared_ptr<Run> &run, const std::optional<Error> &error) {
    if (const auto &failed = error ? error : run->job_error) {
        run->finish(protocol::Reply::fail(run->id, *failed));
        return;
    }
    const auto fields = count_fields(run->migration.counts());
    if (run->migration.finished()) {
        run->finish(protocol::Reply::ok(run->id, fields));
        return;
    }
    try {
        run->reply(protocol::Reply::row(run->id, fields));
    } catch (...) {
        // As finish(): the copy goes on without its audience.
    }
    submit_page(run);
}

StoreMigrator::SubmitJob submit_through(SharedStoreLink &link) {
    return [&link](std::function<void(SharedRegistrationStore &)> job,
                   std::function<void(const std::optional<Error> &)> done) {
        // The job's changes reach the replica before its completion, so a
        // copied page is listed on this worker when its ROW goes out.
        link.submit(std::move(job), std::move(done), SharedStoreLink::no_deadline,
                    SharedStoreLink::Feed::after_job);
    };
}

} // namespace xaps
