#include "group-commit.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <iterator>
#include <utility>

namespace xaps {

GroupCommit::GroupCommit(EventLoop &loop, RegistrationStore &store,
                         std::function<std::int64_t()> unix_now, std::size_t max_batch)
    : loop_(loop), own_writes_(std::make_unique<LocalStoreWrites>(store)), writes_(*own_writes_),
      unix_now_(std::move(unix_now)), max_batch_(std::max<std::size_t>(max_batch, 1)) {}

GroupCommit::GroupCommit(EventLoop &loop, StoreWrites &writes,
                         std::function<std::int64_t()> unix_now, std::size_t max_batch)
    : loop_(loop), writes_(writes), unix_now_(std::move(unix_now)),
      max_batch_(std::max<std::size_t>(max_batch, 1)) {}

GroupCommit::~GroupCommit() = default;

void GroupCommit::put(Registration registration, Done done) {
    pending_.push_back(Pending{std::move(registration), std::move(done)});
    schedule_commit();
}

void GroupCommit::import(Registration registration, ImportDone done) {
    pending_imports_.push_back(PendingImport{std::move(registration), std::move(done)});
    schedule_commit();
}

void GroupCommit::schedule_commit() {
    if (!commit_timer_) {
        commit_timer_ =
            loop_.call_after(std::chrono::milliseconds(0), [this] { commit_pending(); });
    }
}

void GroupCommit::commit_pending() noexcept {
    // The timer is one-shot: a put() from a `done` below arms the next one.
    commit_timer_.reset();
    std::vector<Pending> waiting;
    waiting.swap(pending_);
    const std::size_t import_count = std::min(pending_imports_.size(), max_batch_);
    const auto imports_end = pending_imports_.begin() + static_cast<std::ptrdiff_t>(import_count);
    std::vector<PendingImport> imports(std::make_move_iterator(pending_imports_.begin()),
                                       std::make_move_iterator(imports_end));
    pending_imports_.erase(pending_imports_.begin(), imports_end);
    // The imports share the first batch's transaction.
    std::size_t first = 0;
    do {
        const std::size_t last = std::min(waiting.size(), first + max_batch_);
        std::vector<Pending> batch(std::make_move_iterator(waiting.begin() + first),
                                   std::make_move_iterator(waiting.begin() + last));
        commit_batch(batch, imports);
        imports.clear();
        first = last;
    } while (first < waiting.size());
    if (!pending_imports_.empty()) {
        schedule_commit(); // the rest after the event loop has served others
    }
}

void GroupCommit::commit_batch(std::vector<Pending> &puts,
                               std::vector<PendingImport> &imports) noexcept {
    if (puts.empty() && imports.empty()) {
        return;
    }
    try {
        std::vector<Registration> put_registrations;
        put_registrations.reserve(puts.size());
        for (Pending &pending : puts) {
            put_registrations.push_back(std::move(pending.registration));
        }
        std::vector<Registration> import_registrations;
        import_registrations.reserve(imports.size());
        for (PendingImport &pending : imports) {
            import_registrations.push_back(std::move(pending.registration));
        }
        ++counters_.commits;
        counters_.largest_batch = std::max(counters_.largest_batch, puts.size() + imports.size());
        writes_.write_batch(
            std::move(put_registrations), unix_now_(), std::move(import_registrations),
            [this, alive = std::weak_ptr<char>(alive_), puts = std::move(puts),
             imports = std::move(imports)](RegistrationStore::BatchResults results) mutable {
                if (!alive.expired()) {
                    answer_batch(puts, imports, results);
                }
            });
    } catch (...) {
        // Only an allocation can fail here, before the batch was handed on.
        RegistrationStore::BatchResults results;
        const Error error = current_exception_as_error();
        results.puts.assign(puts.size(), error);
        results.imports.assign(imports.size(), {false, error});
        answer_batch(puts, imports, results);
    }
}

void GroupCommit::answer_batch(std::vector<Pending> &puts, std::vector<PendingImport> &imports,
                               RegistrationStore::BatchResults &results) noexcept {
    // A store breaking its contract: nothing is sure.
    if (results.puts.size() != puts.size()) {
        results.puts.assign(
            puts.size(),
            Error(ErrorKind::internal, "the store answered a batch of registrations wrongly"));
    }
    if (results.imports.size() != imports.size()) {
        results.imports.assign(
            imports.size(),
            {false, Error(ErrorKind::internal, "the store answered a batch of imports wrongly")});
    }
    for (std::size_t i = 0; i < puts.size(); ++i) {
        ++counters_.registrations;
        try {
            puts[i].done(results.puts[i]);
        } catch (...) {
            // Nobody to tell: the reply path swallows its own failures.
        }
    }
    for (std::size_t i = 0; i < imports.size(); ++i) {
        ++counters_.imports;
        try {
            imports[i].done(results.imports[i]);
        } catch (...) {
        }
    }
}

} // namespace xaps
