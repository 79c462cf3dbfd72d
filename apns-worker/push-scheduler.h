// Decides whom to push and when (docs/design.md, "Notifications"). A NOTIFY names a
// user, a mailbox and events; the scheduler pushes every registration of that
// user whose mailbox set contains the mailbox:
//   * aps_version 1 wants only INBOX; version 2 its registered mailboxes.
//     "INBOX" matches case-insensitively, other names exactly.
//   * A version 2 push names the registered mailboxes it is about in "m"
//     (Push::mailbox_hashes): iOS fetches exactly those, and without "m" only
//     the INBOX. The hash is of the name as registered, which is the name as
//     echoed to the phone (INBOX in the client's spelling too), not of the
//     event's. A coalesced push carries the union of its events' mailboxes.
//     Version 1 pushes carry no "m" (iOS would ignore them), and neither does
//     any push with mailbox_hashes off: every registration is then served
//     like version 1, INBOX only.
//   * MessageNew / MessageAppend push now; every other event (flags, expunge,
//     rename, delete...) pushes after `delay`, coalesced per device. A "now"
//     push absorbs a pending delayed one; a delayed event never postpones a
//     pending push.
//   * A device (account_id, device_token) has at most one push pending or in
//     flight. Events arriving while its push is in flight mark it dirty: one
//     more push follows the answer, at once if any of them was "now", else
//     after `delay`, and carries the mailboxes of those events only.
//   * device_gone answers remove the token's registrations from the store
//     (unless they were seen again after Apple's 410 timestamp) and end the
//     device's state: no follow-up push for events that came in flight. The
//     removals of notify() pushes are batched (see removal_delay); those of
//     test() are done before its `done` is called.
// Memory is bounded: at most max_pending devices are tracked (pending or in
// flight); events for further devices are dropped and counted. Nothing here
// blocks, and no exception leaves an EventLoop or PushSender callback.
#pragma once

#include "event-loop.h"
#include "push-sender.h"
#include "registration-store.h"
#include "store-writes.h"
#include "xaps-settings.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace xaps {

struct PushSchedulerSettings {
    // The settings' values for the scheduler; the rest keeps its defaults.
    static PushSchedulerSettings from(const XapsSettings &settings) {
        PushSchedulerSettings scheduler;
        scheduler.delay = settings.delay;
        scheduler.mailbox_hashes = settings.push_mailbox_hashes;
        return scheduler;
    }

    std::chrono::milliseconds delay{}; // xaps_delay
    // xaps_push_mailbox_hashes: "m" in version 2 pushes; off, INBOX only.
    bool mailbox_hashes = false;
    std::size_t max_pending = 100000;
    // Gone devices (410) are removed from the store in batches, one commit
    // for all that came in within this window (a commit costs two fsyncs,
    // which would stall pushing if paid per 410). Nothing is promised about
    // when a removal is durable: one lost in a crash only costs another 410.
    std::chrono::milliseconds removal_delay{100};
    // A batch this large is committed at the end of the event-loop turn.
    std::size_t max_removal_batch = 1000;
};

// Unix seconds from the system clock: the store's notion of "now".
std::int64_t system_unix_seconds();

class PushScheduler {
public:
    // Looks registrations up in `store` and removes gone devices through
    // `writes` (which must outlive this).
    PushScheduler(EventLoop &loop, RegistrationStore &store, StoreWrites &writes,
                  PushSender &sender, PushSchedulerSettings settings,
                  std::function<std::int64_t()> unix_now = system_unix_seconds);
    // Removes gone devices from `store` synchronously (LocalStoreWrites).
    PushScheduler(EventLoop &loop, RegistrationStore &store, PushSender &sender,
                  PushSchedulerSettings settings,
                  std::function<std::int64_t()> unix_now = system_unix_seconds);
    ~PushScheduler();
    PushScheduler(const PushScheduler &) = delete;
    PushScheduler &operator=(const PushScheduler &) = delete;

    // Looks the user up and schedules their pushes. Throws the store's Error
    // when the lookup fails (nothing is scheduled then).
    void notify(std::string_view user, std::string_view mailbox,
                std::span<const std::string> events);

    // Pushes now to every unexpired device of the user, whatever its mailboxes
    // and bypassing coalescing (an admin's `doveadm xaps test`), without "m"
    // (the phone fetches its INBOX, whatever it registered), and calls
    // `done` once with each registration and its outcome, in the store's
    // order. `done` is always called later from the event loop, never from
    // within test(), also when the user has no device. Throws the store's
    // Error when the lookup fails (`done` is not called then).
    using TestDone = std::function<void(std::vector<std::pair<Registration, PushOutcome>>)>;
    void test(std::string_view user, TestDone done);

    struct Counters {
        std::uint64_t notifies = 0;
        std::uint64_t pushes_sent = 0;
        std::uint64_t pushes_delivered = 0;
        // Every final outcome but delivered.
        std::uint64_t pushes_failed = 0;
        // Registrations removed after device_gone answers.
        std::uint64_t devices_removed = 0;
        // Store commits that removed gone devices (one per batch).
        std::uint64_t removal_commits = 0;
        // Gone tokens waiting for their batch's commit.
        std::size_t removals_pending = 0;
        // Device events merged into a pending or in-flight push.
        std::uint64_t coalesced = 0;
        // Device events dropped because max_pending devices were tracked.
        std::uint64_t dropped = 0;
        // Store or sender failures that could not be thrown (see set_error_log).
        std::uint64_t errors = 0;
        // Devices waiting for their delay.
        std::size_t pending = 0;
        // Pushes handed to the sender and not yet answered.
        std::size_t in_flight = 0;
    };
    Counters counters() const {
        Counters counters = counters_;
        counters.removals_pending = gone_.size();
        return counters;
    }

    // Where failures that happen inside callbacks are reported (they cannot be
    // thrown to anyone). By default they are only counted.
    using ErrorLog = std::function<void(std::string_view message)>;
    void set_error_log(ErrorLog log) { error_log_ = std::move(log); }

private:
    struct Device {
        Push push; // mailbox_hashes are filled when it is sent
        // Registered names (as echoed) that the next push covers, without
        // duplicates; empty unless hashes are sent.
        std::vector<std::string> mailboxes;
        bool with_hashes = false;                      // version 2 and mailbox_hashes on
        std::unique_ptr<EventLoop::Watch> delay_timer; // set while pending
        bool in_flight = false;
        bool dirty = false;     // events arrived while in flight
        bool dirty_now = false; // ... and one of them was a "now" event
    };
    struct TestRun;

    // Key: account_id NUL device_token.
    using DeviceMap = std::unordered_map<std::string, Device>;

    // `mailbox`: the registered name the event matched.
    void schedule(const Registration &registration, std::string_view mailbox, bool now);
    void send_now(DeviceMap::iterator device);
    void start_delay(DeviceMap::iterator device);
    void on_delay_expired(std::string key) noexcept;
    void on_push_done(const std::string &key, const PushOutcome &outcome) noexcept;
    void on_test_push_done(const std::shared_ptr<TestRun> &run, std::size_t index,
                           const PushOutcome &outcome) noexcept;
    void finish_test_later(std::shared_ptr<TestRun> run);
    // Counts the outcome; a gone device's registrations are removed at once
    // (`remove_now`) or queued for the next batch.
    void record_outcome(const std::string &device_token, const PushOutcome &outcome,
                        bool remove_now) noexcept;
    void queue_removal(const std::string &device_token, const PushOutcome &outcome);
    void remove_gone() noexcept;
    void report_error(std::string_view message) noexcept;
    // mailbox_name_digest(mailbox), remembered: a push needs one per mailbox,
    // mostly of the same few names, and OpenSSL's MD5 costs more than a lookup.
    const std::string &mailbox_digest(const std::string &mailbox);

    EventLoop &loop_;
    RegistrationStore &store_;
    std::unique_ptr<StoreWrites> own_writes_; // with the constructor without `writes`
    StoreWrites &writes_;
    PushSender &sender_;
    PushSchedulerSettings settings_;
    std::function<std::int64_t()> unix_now_;
    ErrorLog error_log_;
    Counters counters_;
    DeviceMap devices_;
    std::vector<RegistrationStore::GoneToken> gone_; // waiting for remove_gone()
    std::unique_ptr<EventLoop::Watch> removal_timer_;
    std::chrono::milliseconds removal_timer_delay_{0};
    // Mailbox name to digest; emptied when it reaches max_remembered_digests.
    std::unordered_map<std::string, std::string> mailbox_digests_;
    static constexpr std::size_t max_remembered_digests = 256;
    // Sender and posted callbacks may outlive the scheduler; they hold this weakly.
    std::shared_ptr<char> alive_ = std::make_shared<char>();
};

} // namespace xaps
