#include "group-commit.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <iterator>
#include <utility>

namespace xaps {

namespace {

Error current_exception_as_error() {
    try {
        throw;
    } catch (const Error &error) {
        return error;
    } catch (const std::exception &error) {
        return Error(ErrorKind::internal, error.what());
    } catch (...) {
        return Error(ErrorKind::internal, "unknown error while storing registrations");
    }
}

} // namespace

GroupCommit::GroupCommit(EventLoop &loop, RegistrationStore &store,
                         std::function<std::int64_t()> unix_now, std::size_t max_batch)
    : loop_(loop), store_(store), unix_now_(std::move(unix_now)),
      max_batch_(std::max<std::size_t>(max_batch, 1)) {}

GroupCommit::~GroupCommit() = default;

void GroupCommit::put(Registration registration, Done done) {
    pending_.push_back(Pending{std::move(registration), std::move(done)});
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
    for (std::size_t first = 0; first < waiting.size(); first += max_batch_) {
        const std::size_t last = std::min(waiting.size(), first + max_batch_);
        std::vector<Pending> batch(std::make_move_iterator(waiting.begin() + first),
                                   std::make_move_iterator(waiting.begin() + last));
        commit_batch(batch);
    }
}

void GroupCommit::commit_batch(std::vector<Pending> &batch) noexcept {
    std::vector<std::optional<Error>> results;
    try {
        std::vector<Registration> registrations;
        registrations.reserve(batch.size());
        for (Pending &pending : batch) {
            registrations.push_back(std::move(pending.registration));
        }
        ++counters_.commits;
        counters_.largest_batch = std::max(counters_.largest_batch, batch.size());
        results = store_.put_batch(registrations, unix_now_());
    } catch (...) {
        results.assign(batch.size(), current_exception_as_error());
    }
    if (results.size() != batch.size()) { // a store breaking its contract: nothing is sure
        results.assign(batch.size(), Error(ErrorKind::internal,
                                           "the store answered a batch of registrations wrongly"));
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        ++counters_.registrations;
        try {
            batch[i].done(results[i]);
        } catch (...) {
            // Nobody to tell: the reply path swallows its own failures.
        }
    }
}

} // namespace xaps
