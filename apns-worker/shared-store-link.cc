#include "shared-store-link.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <iterator>
#include <utility>
#include <system_error>

namespace xaps {

namespace {

int make_eventfd() {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        throw Error(ErrorKind::unavailable, std::string("eventfd: ") + std::strerror(errno));
    }
    return fd;
}

void signal_fd(int fd) noexcept {
    const std::uint64_t one = 1;
    while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

void drain_fd(int fd) noexcept {
    std::uint64_t count = 0;
    while (::read(fd, &count, sizeof count) < 0 && errno == EINTR) {
    }
}

std::string milliseconds_text(std::chrono::milliseconds duration) {
    if (duration.count() % 1000 == 0) {
        return std::to_string(duration.count() / 1000) + " s";
    }
    return std::to_string(duration.count()) + " ms";
}

} // namespace

SharedStoreLink::SharedStoreLink(EventLoop &loop, Open open, StoreReplica &replica,
                                 SharedStoreLinkSettings settings, LogSink log)
    : loop_(loop), replica_(replica), settings_(settings), log_(std::move(log)) {
    settings_.page_size = std::max<std::size_t>(settings_.page_size, 1);
    settings_.max_queued_jobs = std::max<std::size_t>(settings_.max_queued_jobs, 1);
    loop_wake_fd_ = make_eventfd();
    try {
        thread_wake_fd_ = make_eventfd();
        store_ = open([this](LogLevel level, std::string_view message) {
            log_from_thread(level, std::string(message));
        });
        if (!store_) {
            throw Error(ErrorKind::config, "the shared registration store did not open");
        }
        fetched_revision_ = replica_.applied_revision();
        loop_watch_ =
            loop_.watch_fd(loop_wake_fd_, EventLoop::IoDirection::read, [this] { on_finished(); });
        try {
            thread_ = std::thread([this] { run(); });
        } catch (const std::system_error &failure) {
            throw Error(ErrorKind::unavailable,
                        std::string("cannot start the shared store thread: ") + failure.what());
        }
    } catch (...) {
        loop_watch_.reset();
        store_.reset();
        if (thread_wake_fd_ >= 0) {
            ::close(thread_wake_fd_);
        }
        ::close(loop_wake_fd_);
        throw;
    }
}

SharedStoreLink::~SharedStoreLink() {
    {
        const std::lock_guard lock(mutex_);
        stopping_ = true;
        queue_.clear();
    }
    signal_fd(thread_wake_fd_);
    if (thread_.joinable()) {
        thread_.join();
    }
    loop_watch_.reset();
    store_.reset();
    ::close(thread_wake_fd_);
    ::close(loop_wake_fd_);
}

void SharedStoreLink::submit(Job job, Completion completion, std::chrono::milliseconds deadline,
                             Feed feed) {
    const std::uint64_t id = next_id_++;
    bool queued = false;
    {
        const std::lock_guard lock(mutex_);
        if (!stopping_ && queue_.size() < settings_.max_queued_jobs) {
            queue_.push_back(QueuedJob{id, std::move(job), feed});
            queued = true;
        }
    }
    if (!queued) {
        loop_.post([alive = std::weak_ptr<char>(alive_), completion = std::move(completion)] {
            if (!alive.expired()) {
                completion(Error(ErrorKind::unavailable,
                                 "shared registration store: too many requests waiting"));
            }
        });
        return;
    }
    Waiting &waiting = waiting_[id];
    waiting.completion = std::move(completion);
    if (deadline == default_deadline) {
        deadline = settings_.timeout;
    }
    if (deadline != no_deadline) {
        waiting.deadline_timer = loop_.call_after(deadline, [this, id] { on_deadline(id); });
    }
    signal_fd(thread_wake_fd_);
}

SharedStoreLink::Status SharedStoreLink::status() const {
    Status status;
    {
        const std::lock_guard lock(mutex_);
        status.connected = connected_;
        status.reason = reason_;
        status.queued = queue_.size();
    }
    try {
        status.revision = replica_.applied_revision();
    } catch (const Error &) {
        status.revision = 0;
    }
    return status;
}

std::vector<std::pair<std::string, std::string>> SharedStoreLink::status_rows() const {
    const Status now = status();
    return {
        {"shared_store", now.connected ? "connected" : "unavailable: " + now.reason},
        {"shared_store_revision", std::to_string(now.revision)},
        {"shared_store_queued", std::to_string(now.queued)},
    };
}

// The store thread.

void SharedStoreLink::run() noexcept {
    bool fetch_due = true; // catch up first
    for (;;) {
        drain_wake_fd();
        std::optional<QueuedJob> job;
        {
            const std::lock_guard lock(mutex_);
            if (stopping_) {
                return;
            }
            if (resync_from_) {
                fetched_revision_ = *resync_from_;
                resync_from_.reset();
                resync_mark_ = true;
                fetch_due = true;
            }
            if (!queue_.empty()) {
                job.emplace(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        if (job) {
            run_job(*job);
            continue;
        }
        if (down_since_) {
            fetch_due = true; // the fetch notices first that the store is back
        }
        if (fetch_due) {
            Finished finished;
            const bool fetched = fetch(finished.pages);
            if (!finished.pages.empty() || resync_mark_) {
                hand_to_loop(std::move(finished));
            }
            if (fetched) {
                fetch_due = false;
            } else {
                sleep_until_woken(settings_.retry_interval);
            }
            continue;
        }
        SharedRegistrationStore::Wake wake = SharedRegistrationStore::Wake::timeout;
        try {
            wake = store_->wait(settings_.poll_interval, thread_wake_fd_);
        } catch (...) {
            // A store breaking its promise not to throw: fetch, then retry.
        }
        if (wake != SharedRegistrationStore::Wake::woken) {
            fetch_due = true;
        }
    }
}

void SharedStoreLink::run_job(QueuedJob &queued) noexcept {
    Finished finished;
    finished.id = queued.id;
    try {
        queued.job(*store_);
        // A job may return normally with the database's failure in its
        // results (a batch's entries): only the store knows.
        if (std::string reason = store_->last_error(); reason.empty()) {
            note_success();
        } else {
            note_failure(Error(ErrorKind::unavailable, reason));
        }
    } catch (...) {
        finished.error = current_exception_as_error();
        if (finished.error->kind() == ErrorKind::unavailable) {
            note_failure(*finished.error);
        }
    }
    // A failed job may have committed (a lost answer), so feed after it too.
    if (queued.feed == Feed::after_job) {
        fetch(finished.pages);
    }
    try {
        queued.job = nullptr; // its captures go here, not on the loop
    } catch (...) {
    }
    hand_to_loop(std::move(finished));
}

bool SharedStoreLink::fetch(std::vector<ChangePage> &pages) noexcept {
    try {
        for (;;) {
            ChangePage page = store_->changes_after(fetched_revision_, settings_.page_size);
            note_success();
            const bool last = page.changes.size() < settings_.page_size;
            if (page.reset) {
                fetched_revision_ = 0;
            }
            if (!page.changes.empty()) {
                fetched_revision_ = page.changes.back().revision;
            }
            if (!page.changes.empty() || page.reset) {
                // Only the last page waits for the caller's entry: a long
                // backlog reaches the loop page by page, not all in memory.
                if (!pages.empty()) {
                    Finished earlier;
                    earlier.pages.swap(pages);
                    hand_to_loop(std::move(earlier));
                }
                pages.push_back(std::move(page));
            }
            if (last) {
                return true;
            }
        }
    } catch (...) {
        const Error error = current_exception_as_error();
        note_failure(error);
        return false;
    }
}

void SharedStoreLink::sleep_until_woken(std::chrono::milliseconds timeout) noexcept {
    pollfd fd{thread_wake_fd_, POLLIN, 0};
    const auto millis = std::min<std::chrono::milliseconds::rep>(timeout.count(), 60000);
    while (::poll(&fd, 1, static_cast<int>(millis)) < 0 && errno == EINTR) {
    }
}

void SharedStoreLink::drain_wake_fd() noexcept {
    drain_fd(thread_wake_fd_);
}

void SharedStoreLink::note_success() noexcept {
    if (!down_since_) {
        const std::lock_guard lock(mutex_);
        if (!connected_) {
            connected_ = true; // the first answer: no outage to tell of
            reason_.clear();
        }
        return;
    }
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - *down_since_);
    down_since_.reset();
    {
        const std::lock_guard lock(mutex_);
        connected_ = true;
        reason_.clear();
        ++reachable_again_;
    }
    log_from_thread(LogLevel::info, "shared registration store reachable again after " +
                                        std::to_string(seconds.count()) + " s");
    signal_fd(loop_wake_fd_);
}

void SharedStoreLink::note_failure(const Error &error) noexcept {
    try {
        std::string reason = error.what();
        {
            const std::lock_guard lock(mutex_);
            connected_ = false;
            reason_ = reason;
        }
        if (!down_since_) {
            down_since_ = std::chrono::steady_clock::now();
            log_from_thread(LogLevel::warning, "shared registration store unavailable: " + reason);
        }
    } catch (...) {
    }
}

void SharedStoreLink::hand_to_loop(Finished finished) noexcept {
    // The first entry after a resync tells the loop that pages start there.
    finished.resynced = std::exchange(resync_mark_, false);
    try {
        const std::lock_guard lock(mutex_);
        finished_.push_back(std::move(finished));
    } catch (...) {
        // Out of memory: the loop's deadline answers the job.
    }
    signal_fd(loop_wake_fd_);
}

void SharedStoreLink::log_from_thread(LogLevel level, std::string message) noexcept {
    try {
        const std::lock_guard lock(mutex_);
        log_lines_.push_back(LogLine{level, std::move(message)});
    } catch (...) {
        return;
    }
    signal_fd(loop_wake_fd_);
}

// The loop.

void SharedStoreLink::on_finished() noexcept {
    drain_fd(loop_wake_fd_);
    std::vector<Finished> finished;
    std::vector<LogLine> lines;
    std::uint64_t reachable_again = 0;
    {
        const std::lock_guard lock(mutex_);
        finished.swap(finished_);
        lines.swap(log_lines_);
        reachable_again = reachable_again_;
    }
    // Keeps this alive check valid across callbacks that may destroy us.
    const std::weak_ptr<char> alive = alive_;
    for (LogLine &line : lines) {
        if (log_) {
            try {
                log_(line.level, line.message);
            } catch (...) {
            }
        }
    }
    for (Finished &entry : finished) {
        apply_pages(entry);
        if (entry.id == 0) {
            continue;
        }
        auto it = waiting_.find(entry.id);
        if (it == waiting_.end()) {
            continue; // past its deadline
        }
        Completion completion = std::move(it->second.completion);
        waiting_.erase(it);
        try {
            completion(entry.error);
        } catch (...) {
        }
        if (alive.expired()) {
            return;
        }
    }
    if (reachable_again != reachable_seen_) {
        reachable_seen_ = reachable_again;
        if (reachable_observer_) {
            try {
                reachable_observer_();
            } catch (...) {
            }
        }
    }
}

void SharedStoreLink::apply_pages(Finished &finished) noexcept {
    if (finished.resynced) {
        replica_broken_ = false;
    }
    if (replica_broken_) {
        return;
    }
    for (const ChangePage &page : finished.pages) {
        try {
            replica_.apply(page);
        } catch (...) {
            const Error error = current_exception_as_error();
            replica_broken_ = true;
            if (log_) {
                try {
                    log_(LogLevel::error,
                         std::string("shared registration store: updating the local replica "
                                     "failed, fetching the changes again: ") +
                             error.what());
                } catch (...) {
                }
            }
            try {
                const std::uint64_t from = replica_.applied_revision();
                {
                    const std::lock_guard lock(mutex_);
                    resync_from_ = from;
                }
                signal_fd(thread_wake_fd_);
            } catch (...) {
                // The replica cannot even be read: the next failure retries.
                replica_broken_ = false;
            }
            return;
        }
    }
}

void SharedStoreLink::on_deadline(std::uint64_t id) noexcept {
    auto it = waiting_.find(id);
    if (it == waiting_.end()) {
        return;
    }
    Completion completion = std::move(it->second.completion);
    // Destroys this very timer's callback: only locals from here on.
    waiting_.erase(it);
    std::string reason;
    {
        const std::lock_guard lock(mutex_);
        reason = connected_ ? std::string() : reason_;
    }
    try {
        completion(
            Error(ErrorKind::unavailable, "shared registration store did not answer within " +
                                              milliseconds_text(settings_.timeout) +
                                              (reason.empty() ? std::string() : ": " + reason)));
    } catch (...) {
    }
}

// SharedStoreWrites

SharedStoreWrites::SharedStoreWrites(SharedStoreLink &link, std::chrono::seconds expire_interval,
                                     std::size_t max_kept_removals)
    : link_(link), expire_interval_(expire_interval), max_kept_removals_(max_kept_removals) {
    link_.set_reachable_observer([this] { retry_kept(); });
}

SharedStoreWrites::~SharedStoreWrites() {
    link_.set_reachable_observer(nullptr);
}

void SharedStoreWrites::write_batch(std::vector<Registration> puts, std::int64_t now,
                                    std::vector<Registration> imports, BatchDone done) {
    auto results = std::make_shared<RegistrationStore::BatchResults>();
    const std::size_t put_count = puts.size();
    const std::size_t import_count = imports.size();
    link_.submit(
        [results, puts = std::move(puts), now, imports = std::move(imports)](
            SharedRegistrationStore &store) { *results = store.write_batch(puts, now, imports); },
        [results, put_count, import_count,
         done = std::move(done)](const std::optional<Error> &error) {
            if (error) {
                // Past its deadline the job may still be writing *results.
                RegistrationStore::BatchResults failed;
                failed.puts.assign(put_count, *error);
                failed.imports.assign(import_count, {false, *error});
                done(std::move(failed));
                return;
            }
            done(std::move(*results));
        });
}

void SharedStoreWrites::purge(PurgeScope scope, std::string value, CountDone done) {
    auto count = std::make_shared<std::size_t>(0);
    link_.submit(
        [count, scope, value = std::move(value)](SharedRegistrationStore &store) {
            switch (scope) {
            case PurgeScope::user:
                *count = store.remove_user(value);
                return;
            case PurgeScope::token:
                *count = store.remove_token(value);
                return;
            case PurgeScope::all:
                break;
            }
            *count = store.remove_all();
        },
        [count, done = std::move(done)](const std::optional<Error> &error) {
            done(error, error ? 0 : *count);
        });
}

void SharedStoreWrites::remove_gone_tokens(std::vector<RegistrationStore::GoneToken> tokens,
                                           CountDone done) {
    auto count = std::make_shared<std::size_t>(0);
    auto kept = std::make_shared<std::vector<RegistrationStore::GoneToken>>(tokens);
    link_.submit([count, tokens = std::move(tokens)](
                     SharedRegistrationStore &store) { *count = store.remove_gone_tokens(tokens); },
                 [this, alive = std::weak_ptr<char>(alive_), count, kept,
                  done = std::move(done)](const std::optional<Error> &error) {
                     if (error && error->kind() == ErrorKind::unavailable && !alive.expired()) {
                         keep(std::move(*kept));
                         done(std::nullopt, 0);
                         return;
                     }
                     if (!error && !alive.expired()) {
                         retry_kept(); // kept after a deadline, with no outage noticed
                     }
                     done(error, error ? 0 : *count);
                 });
}

void SharedStoreWrites::expire(std::int64_t now, CountDone done) {
    auto count = std::make_shared<std::size_t>(0);
    link_.submit(
        [count, now, interval = expire_interval_](SharedRegistrationStore &store) {
            *count = store.expire_once(now, interval).value_or(0);
        },
        [count, done = std::move(done)](const std::optional<Error> &error) {
            done(error, error ? 0 : *count);
        });
}

void SharedStoreWrites::keep(std::vector<RegistrationStore::GoneToken> tokens) {
    for (RegistrationStore::GoneToken &token : tokens) {
        kept_.push_back(std::move(token));
    }
    while (kept_.size() > max_kept_removals_) {
        kept_.pop_front();
    }
}

void SharedStoreWrites::retry_kept() {
    if (kept_.empty()) {
        return;
    }
    std::vector<RegistrationStore::GoneToken> tokens(std::make_move_iterator(kept_.begin()),
                                                     std::make_move_iterator(kept_.end()));
    kept_.clear();
    remove_gone_tokens(std::move(tokens), [](const std::optional<Error> &, std::size_t) {});
}

} // namespace xaps
