#include "push-scheduler.h"

#include "apns-payload.h"
#include "xaps-assert.h"
#include "xaps-error.h"

#include <algorithm>
#include <exception>
#include <optional>

namespace xaps {

namespace {

bool is_new_mail_event(std::string_view event) {
    return event == "MessageNew" || event == "MessageAppend";
}

bool equals_ascii_case_insensitive(std::string_view a, std::string_view b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
        auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
        return lower(x) == lower(y);
    });
}

bool is_inbox(std::string_view mailbox) {
    return equals_ascii_case_insensitive(mailbox, "INBOX");
}

// The registered name an event on `mailbox` concerns, as the registration
// spells it; nullopt when the registration does not want the event. Only
// INBOX when `inbox_only`.
std::optional<std::string_view> wanted_mailbox(const Registration &registration,
                                               std::string_view mailbox, bool inbox_only) {
    bool inbox = is_inbox(mailbox);
    if (inbox_only) {
        return inbox ? std::optional<std::string_view>(mailbox) : std::nullopt;
    }
    auto found = std::find_if(
        registration.mailboxes.begin(), registration.mailboxes.end(),
        [&](const std::string &wanted) { return inbox ? is_inbox(wanted) : wanted == mailbox; });
    if (found == registration.mailboxes.end()) {
        return std::nullopt;
    }
    return std::string_view(*found);
}

std::string device_key(const Registration &registration) {
    std::string key = registration.account_id;
    key.push_back('\0');
    key.append(registration.device_token);
    return key;
}

std::string describe_current_exception() {
    try {
        throw;
    } catch (const std::exception &error) {
        return error.what();
    } catch (...) {
        return "unknown exception";
    }
}

} // namespace

std::int64_t system_unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct PushScheduler::TestRun {
    std::vector<std::pair<Registration, PushOutcome>> results;
    std::size_t unanswered = 0;
    TestDone done;
};

PushScheduler::PushScheduler(EventLoop &loop, RegistrationStore &store, StoreWrites &writes,
                             PushSender &sender, PushSchedulerSettings settings,
                             std::function<std::int64_t()> unix_now)
    : loop_(loop), store_(store), writes_(writes), sender_(sender), settings_(settings),
      unix_now_(std::move(unix_now)) {}

PushScheduler::PushScheduler(EventLoop &loop, RegistrationStore &store, PushSender &sender,
                             PushSchedulerSettings settings, std::function<std::int64_t()> unix_now)
    : loop_(loop), store_(store), own_writes_(std::make_unique<LocalStoreWrites>(store)),
      writes_(*own_writes_), sender_(sender), settings_(settings), unix_now_(std::move(unix_now)) {}

// Gone devices still queued are removed now: the worker is stopping, and a
// removal lost here would only cost another 410, but costs nothing to keep.
PushScheduler::~PushScheduler() {
    remove_gone();
}

void PushScheduler::notify(std::string_view user, std::string_view mailbox,
                           std::span<const std::string> events) {
    ++counters_.notifies;
    bool now = std::any_of(events.begin(), events.end(),
                           [](const std::string &event) { return is_new_mail_event(event); });
    store_.visit_user(user, unix_now_(), [&](const Registration &registration) {
        const bool inbox_only = registration.aps_version == 1 || !settings_.mailbox_hashes;
        if (auto wanted = wanted_mailbox(registration, mailbox, inbox_only)) {
            schedule(registration, *wanted, now);
        }
    });
}

void PushScheduler::schedule(const Registration &registration, std::string_view mailbox, bool now) {
    // One hash of the key for both the lookup and the insertion.
    auto [it, inserted] = devices_.try_emplace(device_key(registration));
    Device &device = it->second;
    // The latest registration decides: it may have changed its aps_version.
    device.with_hashes = registration.aps_version != 1 && settings_.mailbox_hashes;
    if (!device.with_hashes) {
        device.mailboxes.clear();
    } else if (std::find(device.mailboxes.begin(), device.mailboxes.end(), mailbox) ==
               device.mailboxes.end()) {
        device.mailboxes.emplace_back(mailbox);
    }
    if (!inserted) {
        ++counters_.coalesced;
        if (device.in_flight) {
            device.dirty = true;
            device.dirty_now = device.dirty_now || now;
        } else if (now) {
            device.delay_timer.reset();
            --counters_.pending;
            send_now(it);
        }
        return;
    }
    if (devices_.size() > settings_.max_pending) {
        devices_.erase(it);
        ++counters_.dropped;
        return;
    }
    it->second.push = Push{registration.device_token, registration.account_id};
    if (now) {
        send_now(it);
    } else {
        start_delay(it);
    }
}

void PushScheduler::send_now(DeviceMap::iterator it) {
    Device &device = it->second;
    device.in_flight = true;
    ++counters_.in_flight;
    ++counters_.pushes_sent;
    try {
        // The mailboxes gathered so far go with this push; events arriving
        // while it is in flight gather for the next one.
        device.push.mailbox_hashes.clear();
        for (const std::string &mailbox : device.mailboxes) {
            device.push.mailbox_hashes.push_back(mailbox_digest(mailbox));
        }
        device.mailboxes.clear();
        sender_.send(device.push, [this, alive = std::weak_ptr<char>(alive_),
                                   key = it->first](const PushOutcome &outcome) {
            if (alive.lock()) {
                on_push_done(key, outcome);
            }
        });
    } catch (...) {
        --counters_.in_flight;
        ++counters_.pushes_failed;
        ++counters_.errors;
        devices_.erase(it);
        report_error("push could not be handed to the sender: " + describe_current_exception());
    }
}

const std::string &PushScheduler::mailbox_digest(const std::string &mailbox) {
    if (auto found = mailbox_digests_.find(mailbox); found != mailbox_digests_.end()) {
        return found->second;
    }
    std::string digest = mailbox_name_digest(mailbox);
    if (mailbox_digests_.size() >= max_remembered_digests) {
        mailbox_digests_.clear();
    }
    return mailbox_digests_.emplace(mailbox, std::move(digest)).first->second;
}

void PushScheduler::start_delay(DeviceMap::iterator it) {
    it->second.delay_timer =
        loop_.call_after(settings_.delay, [this, key = it->first]() { on_delay_expired(key); });
    ++counters_.pending;
}

void PushScheduler::on_delay_expired(std::string key) noexcept {
    try {
        auto it = devices_.find(key);
        if (it == devices_.end()) {
            return;
        }
        // Destroys this very callback: `key` is our own copy.
        it->second.delay_timer.reset();
        --counters_.pending;
        send_now(it);
    } catch (...) {
        ++counters_.errors;
        devices_.erase(key);
        report_error("delayed push failed: " + describe_current_exception());
    }
}

void PushScheduler::on_push_done(const std::string &key, const PushOutcome &outcome) noexcept {
    try {
        auto it = devices_.find(key);
        // A device in flight stays tracked until its answer; a second answer
        // would mean the sender broke its "exactly once".
        XAPS_ASSERT(it != devices_.end() && it->second.in_flight);
        XAPS_ASSERT(counters_.in_flight > 0);
        Device &device = it->second;
        device.in_flight = false;
        --counters_.in_flight;
        record_outcome(device.push.device_token, outcome, false);
        // A gone device gets no follow-up, even if it re-registered after
        // Apple's timestamp and so was kept: its next event pushes again.
        if (!device.dirty || outcome.result == PushOutcome::Result::device_gone) {
            devices_.erase(it);
            return;
        }
        bool now = device.dirty_now;
        device.dirty = false;
        device.dirty_now = false;
        if (now) {
            send_now(it);
        } else {
            start_delay(it);
        }
    } catch (...) {
        ++counters_.errors;
        devices_.erase(key);
        report_error("handling a push answer failed: " + describe_current_exception());
    }
}

void PushScheduler::record_outcome(const std::string &device_token, const PushOutcome &outcome,
                                   bool remove_now) noexcept {
    if (outcome.result == PushOutcome::Result::delivered) {
        ++counters_.pushes_delivered;
        return;
    }
    ++counters_.pushes_failed;
    if (outcome.result != PushOutcome::Result::device_gone) {
        return;
    }
    try {
        queue_removal(device_token, outcome);
        if (remove_now) {
            remove_gone();
        }
    } catch (...) {
        ++counters_.errors;
        report_error("removing gone device " + device_token +
                     " failed: " + describe_current_exception());
    }
}

void PushScheduler::queue_removal(const std::string &device_token, const PushOutcome &outcome) {
    // Apple's milliseconds to the store's seconds, rounded down: a
    // registration seen in that same second counts as seen before.
    std::optional<std::int64_t> since;
    if (outcome.unregistered_at_ms) {
        since = *outcome.unregistered_at_ms / 1000;
    }
    gone_.push_back(RegistrationStore::GoneToken{device_token, since});
    const std::chrono::milliseconds delay = gone_.size() >= settings_.max_removal_batch
                                                ? std::chrono::milliseconds(0)
                                                : settings_.removal_delay;
    if (!removal_timer_ || delay < removal_timer_delay_) {
        removal_timer_delay_ = delay;
        removal_timer_ = loop_.call_after(delay, [this] { remove_gone(); });
    }
}

void PushScheduler::remove_gone() noexcept {
    std::vector<RegistrationStore::GoneToken> batch;
    batch.swap(gone_);
    // Destroys this very callback when called from it: only locals from here on.
    removal_timer_.reset();
    if (batch.empty()) {
        return;
    }
    std::string tokens;
    for (const auto &gone : batch) {
        tokens += (tokens.empty() ? "" : ", ") + gone.device_token;
        if (tokens.size() > 200) {
            tokens += ", ...";
            break;
        }
    }
    const std::size_t count = batch.size();
    try {
        ++counters_.removal_commits;
        writes_.remove_gone_tokens(
            std::move(batch), [this, alive = std::weak_ptr<char>(alive_), count,
                               tokens](const std::optional<Error> &error, std::size_t removed) {
                if (alive.expired()) {
                    return;
                }
                if (error) {
                    counters_.errors += count;
                    report_error("removing gone device " + tokens + " failed: " + error->what());
                } else {
                    counters_.devices_removed += removed;
                }
            });
    } catch (...) {
        counters_.errors += count;
        report_error("removing gone device " + tokens + " failed: " + describe_current_exception());
    }
}

void PushScheduler::test(std::string_view user, TestDone done) {
    auto run = std::make_shared<TestRun>();
    run->done = std::move(done);
    for (auto &registration : store_.find_user(user, unix_now_())) {
        run->results.emplace_back(std::move(registration), PushOutcome{});
    }
    run->unanswered = run->results.size();
    for (std::size_t index = 0; index < run->results.size(); ++index) {
        const Registration &registration = run->results[index].first;
        ++counters_.in_flight;
        ++counters_.pushes_sent;
        try {
            sender_.send(Push{registration.device_token, registration.account_id},
                         [this, alive = std::weak_ptr<char>(alive_), run,
                          index](const PushOutcome &outcome) {
                             if (alive.lock()) {
                                 on_test_push_done(run, index, outcome);
                             }
                         });
        } catch (...) {
            --counters_.in_flight;
            ++counters_.pushes_failed;
            ++counters_.errors;
            --run->unanswered;
            PushOutcome &failed = run->results[index].second;
            failed.result = PushOutcome::Result::failed;
            failed.reason = describe_current_exception();
        }
    }
    if (run->unanswered == 0) {
        finish_test_later(std::move(run));
    }
}

void PushScheduler::on_test_push_done(const std::shared_ptr<TestRun> &run, std::size_t index,
                                      const PushOutcome &outcome) noexcept {
    try {
        --counters_.in_flight;
        // At once: the admin who asked expects the removal done when told.
        record_outcome(run->results[index].first.device_token, outcome, true);
        run->results[index].second = outcome;
        if (--run->unanswered == 0) {
            run->done(std::move(run->results));
        }
    } catch (...) {
        ++counters_.errors;
        report_error("test push answer failed: " + describe_current_exception());
    }
}

void PushScheduler::finish_test_later(std::shared_ptr<TestRun> run) {
    loop_.post([this, alive = std::weak_ptr<char>(alive_), run = std::move(run)] {
        if (!alive.lock()) {
            return;
        }
        try {
            run->done(std::move(run->results));
        } catch (...) {
            ++counters_.errors;
            report_error("test completion failed: " + describe_current_exception());
        }
    });
}

void PushScheduler::report_error(std::string_view message) noexcept {
    if (!error_log_) {
        return;
    }
    try {
        error_log_(message);
    } catch (...) {
        // The log is the last resort; nothing is left to tell.
    }
}

} // namespace xaps
