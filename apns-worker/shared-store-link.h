// The worker's link to the shared registration store: one store thread that
// makes every database call, so the event loop never waits for the database.
//
// The store thread runs submitted jobs in order from a bounded queue, and
// between jobs feeds the local replica: it waits for the database's change
// notification (or a fallback poll) and fetches changes_after() the revision
// it fetched last. The replica is LMDB, whose environment is one per process
// and whose write transactions belong to one thread: it is only touched from
// the loop, which applies the fetched pages, in order, as completions arrive
// through an eventfd watched by the loop. A job that writes is followed by a
// fetch, so the change it made is in the replica before its completion runs:
// a REGISTER answered OK is in this worker's replica, and a NOTIFY right
// after it finds the device.
//
// Outages: the first failed call logs one warning, "shared registration
// store unavailable: <reason>"; the first call that works again logs one
// info, "shared registration store reachable again after <N> s". Both are
// logged from the loop (Dovecot's log is not thread-safe).
#pragma once

#include "event-loop.h"
#include "log-sink.h"
#include "registration-store.h"
#include "shared-registration-store.h"
#include "store-writes.h"
#include "xaps-error.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace xaps {

struct SharedStoreLinkSettings {
    // The loop-side deadline of a job (xaps_shared_store_timeout).
    std::chrono::milliseconds timeout{5000};
    // Jobs waiting for the store thread; beyond it, submit() fails at once.
    std::size_t max_queued_jobs = 1024;
    // How often the replica asks for changes when no notification came.
    std::chrono::milliseconds poll_interval{10000};
    // How soon a failed fetch is tried again.
    std::chrono::milliseconds retry_interval{1000};
    // Changes per changes_after() call.
    std::size_t page_size = 1000;
};

class SharedStoreLink {
public:
    // Opens the shared store with a log sink that may be called from any
    // thread (it hands its lines to the loop).
    using Open = std::function<std::unique_ptr<SharedRegistrationStore>(LogSink thread_safe_log)>;

    // Opens the store through `open` (its Error propagates), and starts the
    // store thread, which begins by catching the replica up. `replica` must
    // outlive this, and is used from the loop only.
    SharedStoreLink(EventLoop &loop, Open open, StoreReplica &replica,
                    SharedStoreLinkSettings settings, LogSink log);
    // Stops the store thread (a job or database call under way finishes
    // first; a wait for changes is woken) and joins it. Jobs not run yet are
    // dropped, and no completion is called any more.
    ~SharedStoreLink();
    SharedStoreLink(const SharedStoreLink &) = delete;
    SharedStoreLink &operator=(const SharedStoreLink &) = delete;

    // Runs on the store thread; may throw (the Error reaches the completion).
    using Job = std::function<void(SharedRegistrationStore &store)>;
    // Runs on the loop: nullopt when the job returned, else why not.
    using Completion = std::function<void(const std::optional<Error> &error)>;
    static constexpr std::chrono::milliseconds default_deadline{0};
    static constexpr std::chrono::milliseconds no_deadline = std::chrono::milliseconds::max();
    enum class Feed { after_job, none };

    // Runs `job` on the store thread, then `completion` once on the loop,
    // never during submit(). The completion hears the job's Error; or
    // Error(unavailable) when the queue is full, or when `deadline` (default:
    // settings.timeout) passed first: the job may still run or have run, and
    // its changes still reach the replica, but its completion is not called
    // again. With Feed::after_job, the changes committed up to the job's end
    // are applied to the replica before the completion runs. A job hands
    // results to its completion through what both capture (a shared_ptr).
    // A completion without an Error runs after its job has finished; one
    // with an Error may run while the job is still running (deadline), so it
    // must not touch what the job writes.
    void submit(Job job, Completion completion,
                std::chrono::milliseconds deadline = default_deadline, Feed feed = Feed::after_job);

    struct Status {
        bool connected = false;
        std::string reason;         // why not, while not connected
        std::uint64_t revision = 0; // applied to the replica
        std::size_t queued = 0;     // jobs waiting for the store thread
    };
    Status status() const;
    // STATUS rows: "shared_store" ("connected" or "unavailable: <reason>"),
    // "shared_store_revision", "shared_store_queued".
    std::vector<std::pair<std::string, std::string>> status_rows() const;

    // Called from the loop each time the store answers again after an outage.
    void set_reachable_observer(std::function<void()> observer) {
        reachable_observer_ = std::move(observer);
    }

private:
    struct QueuedJob {
        std::uint64_t id = 0;
        Job job;
        Feed feed = Feed::after_job;
    };
    // What the store thread hands the loop.
    struct Finished {
        std::uint64_t id = 0; // 0: a feed of its own
        std::optional<Error> error;
        std::vector<ChangePage> pages;
        bool resynced = false; // the pages start where the loop asked (resync_from_)
    };
    struct Waiting {
        Completion completion;
        std::unique_ptr<EventLoop::Watch> deadline_timer;
    };
    struct LogLine {
        LogLevel level;
        std::string message;
    };

    void run() noexcept;
    void run_job(QueuedJob &job) noexcept;
    // Fetches the changes after fetched_revision_: the last page into
    // `pages`, earlier ones straight to the loop. False when it failed.
    bool fetch(std::vector<ChangePage> &pages) noexcept;
    void sleep_until_woken(std::chrono::milliseconds timeout) noexcept;
    void drain_wake_fd() noexcept;
    void note_success() noexcept;
    void note_failure(const Error &error) noexcept;
    void hand_to_loop(Finished finished) noexcept;
    void log_from_thread(LogLevel level, std::string message) noexcept;

    void on_finished() noexcept;
    void apply_pages(Finished &finished) noexcept;
    void on_deadline(std::uint64_t id) noexcept;

    EventLoop &loop_;
    StoreReplica &replica_;
    SharedStoreLinkSettings settings_;
    LogSink log_;
    std::unique_ptr<SharedRegistrationStore> store_;
    int thread_wake_fd_ = -1; // eventfd: the store thread has work or must stop
    int loop_wake_fd_ = -1;   // eventfd: the loop has completions
    std::unique_ptr<EventLoop::Watch> loop_watch_;

    mutable std::mutex mutex_; // guards what follows, up to the thread
    std::deque<QueuedJob> queue_;
    std::vector<Finished> finished_;
    std::vector<LogLine> log_lines_;
    bool stopping_ = false;
    bool connected_ = false;
    std::string reason_ = "not connected yet";
    std::optional<std::uint64_t> resync_from_; // the loop's request, for the thread
    std::uint64_t reachable_again_ = 0;        // times the thread saw the store come back

    // The store thread's own.
    std::uint64_t fetched_revision_ = 0;
    bool resync_mark_ = false; // the next entry handed to the loop starts a resync
    std::optional<std::chrono::steady_clock::time_point> down_since_;

    // The loop's own.
    std::uint64_t next_id_ = 1;
    std::unordered_map<std::uint64_t, Waiting> waiting_;
    bool replica_broken_ = false; // a page failed: skip pages until a resync
    std::uint64_t reachable_seen_ = 0;
    std::function<void()> reachable_observer_;
    std::shared_ptr<char> alive_ = std::make_shared<char>();

    std::thread thread_;
};

// StoreWrites over the link: each write is a job, answered after the
// database committed and the replica has the change.
class SharedStoreWrites final : public StoreWrites {
public:
    // `expire_interval`: expire() runs expire_once(now, expire_interval).
    // Gone tokens whose removal fails for want of the database are kept (the
    // newest max_kept_removals) and removed once it answers again.
    SharedStoreWrites(SharedStoreLink &link, std::chrono::seconds expire_interval,
                      std::size_t max_kept_removals = 10000);
    ~SharedStoreWrites() override;

    void write_batch(std::vector<Registration> puts, std::int64_t now,
                     std::vector<Registration> imports, BatchDone done) override;
    void purge(PurgeScope scope, std::string value, CountDone done) override;
    // A removal that fails as unavailable is kept for later, and `done`
    // hears no error and a count of 0.
    void remove_gone_tokens(std::vector<RegistrationStore::GoneToken> tokens,
                            CountDone done) override;
    void expire(std::int64_t now, CountDone done) override;

    std::size_t kept_removals() const noexcept { return kept_.size(); }

private:
    void keep(std::vector<RegistrationStore::GoneToken> tokens);
    void retry_kept();

    SharedStoreLink &link_;
    std::chrono::seconds expire_interval_;
    std::size_t max_kept_removals_;
    std::deque<RegistrationStore::GoneToken> kept_;
    std::shared_ptr<char> alive_ = std::make_shared<char>();
};

} // namespace xaps
