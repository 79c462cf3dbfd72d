// An in-memory SharedRegistrationStore for tests of the code around it (the
// store thread, the replica feed): revisions, tombstones and change
// notification as the contract describes, no policy (cap, retirement), and
// switches a test flips from its own thread: the database down, calls that
// hang until released, and another worker's writes.
#pragma once

#include "registration-rules.h"
#include "shared-registration-store.h"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace xaps::test {

class FakeSharedStore final : public SharedRegistrationStore {
public:
    // What tests flip and read; shared so a test keeps it after the link
    // took the store.
    struct Control {
        std::mutex mutex;
        std::condition_variable released;
        bool available = true;
        std::string reason = "connection refused";
        bool hold = false;   // calls wait until it is false again
        int calls_held = 0;  // calls waiting now
        int write_calls = 0; // write_batch / removals / expiry calls that ran
        std::atomic<bool> notified{false};
        // write_batch waits while this is true, polled with relaxed loads:
        // unlike `hold`, releasing it orders nothing between the threads, so
        // a thread sanitizer still sees what the store thread and the loop
        // share.
        std::atomic<bool> write_batch_waits{false};

        void set_available(bool value) {
            const std::lock_guard lock(mutex);
            available = value;
        }
        void set_hold(bool value) {
            {
                const std::lock_guard lock(mutex);
                hold = value;
            }
            released.notify_all();
        }
    };

    FakeSharedStore() : control_(std::make_shared<Control>()) {}
    std::shared_ptr<Control> control() const { return control_; }

    // Another worker's registration, with a revision of its own.
    void external_put(const Registration &registration) {
        {
            const std::lock_guard lock(data_mutex_);
            upsert(registration);
        }
        control_->notified = true;
    }

    ChangePage changes_after(std::uint64_t revision, std::size_t max_changes) override {
        enter(false);
        const std::lock_guard lock(data_mutex_);
        ChangePage page;
        if (revision < pruned_before_) {
            page.reset = true;
            revision = 0;
        }
        std::vector<StoreChange> all;
        for (const auto &[key, row] : rows_) {
            if (row.revision > revision) {
                all.push_back(StoreChange{row.revision, false, row.registration});
            }
        }
        for (const StoreChange &tombstone : tombstones_) {
            if (tombstone.revision > revision) {
                all.push_back(tombstone);
            }
        }
        std::sort(all.begin(), all.end(), [](const StoreChange &a, const StoreChange &b) {
            return a.revision < b.revision;
        });
        if (all.size() > max_changes) {
            all.resize(max_changes);
        }
        page.changes = std::move(all);
        return page;
    }

    Wake wait(std::chrono::milliseconds timeout, int wake_fd) override {
        const auto end = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < end) {
            if (control_->notified.exchange(false)) {
                return Wake::changed;
            }
            pollfd fd{wake_fd, POLLIN, 0};
            if (::poll(&fd, 1, 5) > 0) {
                return Wake::woken;
            }
        }
        return Wake::timeout;
    }

    std::optional<std::size_t> expire_once(std::int64_t now,
                                           std::chrono::seconds interval) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        if (last_expire_ && now - *last_expire_ < interval.count()) {
            return std::nullopt;
        }
        last_expire_ = now;
        return remove_if([&](const Registration &r) { return r.last_seen < now - ttl; });
    }

    std::string last_error() const override {
        const std::lock_guard lock(control_->mutex);
        return control_->available ? std::string() : control_->reason;
    }

    void put(const Registration &registration, std::int64_t now) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        put_locked(registration, now);
    }

    BatchResults write_batch(std::span<const Registration> puts, std::int64_t now,
                             std::span<const Registration> imports) override {
        enter(true);
        while (control_->write_batch_waits.load(std::memory_order_relaxed)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        const std::lock_guard lock(data_mutex_);
        BatchResults results;
        for (const Registration &registration : puts) {
            put_locked(registration, now);
            results.puts.emplace_back();
        }
        for (const Registration &registration : imports) {
            results.imports.push_back(ImportResult{import_locked(registration), std::nullopt});
        }
        return results;
    }

    bool import(const Registration &registration) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        return import_locked(registration);
    }

    std::vector<Registration> find_user(std::string_view user, std::int64_t now) override {
        enter(false);
        const std::lock_guard lock(data_mutex_);
        std::vector<Registration> found;
        for (const auto &[key, row] : rows_) {
            if (std::get<0>(key) == lower_ascii(user) && row.registration.last_seen >= now - ttl) {
                found.push_back(row.registration);
            }
        }
        return found;
    }

    std::vector<Registration> all() override {
        enter(false);
        const std::lock_guard lock(data_mutex_);
        std::vector<Registration> found;
        for (const auto &[key, row] : rows_) {
            found.push_back(row.registration);
        }
        return found;
    }

    std::size_t size() override {
        enter(false);
        const std::lock_guard lock(data_mutex_);
        return rows_.size();
    }

    Page page_after(std::string_view user, std::string_view, std::size_t,
                    std::int64_t now) override {
        Page page;
        page.registrations = user.empty() ? all() : find_user(user, now);
        return page;
    }

    std::size_t remove_user(std::string_view user) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        return remove_if(
            [&](const Registration &r) { return lower_ascii(r.user) == lower_ascii(user); });
    }

    std::size_t remove_token(std::string_view device_token) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        return remove_if([&](const Registration &r) { return r.device_token == device_token; });
    }

    std::size_t remove_all() override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        return remove_if([](const Registration &) { return true; });
    }

    std::size_t remove_token_unless_seen_since(std::string_view device_token,
                                               std::int64_t since) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        return remove_if([&](const Registration &r) {
            return r.device_token == device_token && r.last_seen <= since;
        });
    }

    std::size_t remove_gone_tokens(std::span<const GoneToken> tokens) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        std::size_t removed = 0;
        for (const GoneToken &gone : tokens) {
            removed += remove_if([&](const Registration &r) {
                return r.device_token == gone.device_token &&
                       (!gone.since || r.last_seen <= *gone.since);
            });
        }
        return removed;
    }

    std::size_t expire(std::int64_t now) override {
        enter(true);
        const std::lock_guard lock(data_mutex_);
        return remove_if([&](const Registration &r) { return r.last_seen < now - ttl; });
    }

    // Forgets tombstones: a reader behind the current revision gets a reset.
    void prune_tombstones() {
        const std::lock_guard lock(data_mutex_);
        tombstones_.clear();
        pruned_before_ = revision_;
    }

    std::int64_t ttl = 86400 * 365;

private:
    using Key = std::tuple<std::string, std::string, std::string>; // lower user, account, token
    struct Row {
        std::uint64_t revision = 0;
        Registration registration;
    };

    static Key key_of(const Registration &r) {
        return {lower_ascii(r.user), r.account_id, r.device_token};
    }

    // Blocks while held; throws while unavailable.
    void enter(bool write) {
        std::unique_lock lock(control_->mutex);
        ++control_->calls_held;
        control_->released.wait(lock, [&] { return !control_->hold; });
        --control_->calls_held;
        if (!control_->available) {
            throw Error(ErrorKind::unavailable, control_->reason);
        }
        if (write) {
            ++control_->write_calls;
        }
    }

    void upsert(const Registration &registration) {
        rows_[key_of(registration)] = Row{++revision_, registration};
    }

    void put_locked(const Registration &registration, std::int64_t now) {
        Registration stored = registration;
        stored.last_seen = now;
        auto it = rows_.find(key_of(registration));
        stored.registered_at = it == rows_.end() ? now : it->second.registration.registered_at;
        upsert(stored);
    }

    bool import_locked(const Registration &registration) {
        if (rows_.count(key_of(registration)) != 0) {
            return false;
        }
        upsert(registration);
        return true;
    }

    template <typename Doomed> std::size_t remove_if(Doomed doomed) {
        std::size_t removed = 0;
        for (auto it = rows_.begin(); it != rows_.end();) {
            if (doomed(it->second.registration)) {
                StoreChange tombstone;
                tombstone.revision = ++revision_;
                tombstone.removed = true;
                tombstone.registration.user = it->second.registration.user;
                tombstone.registration.account_id = it->second.registration.account_id;
                tombstone.registration.device_token = it->second.registration.device_token;
                tombstones_.push_back(std::move(tombstone));
                it = rows_.erase(it);
                ++removed;
            } else {
                ++it;
            }
        }
        return removed;
    }

    std::shared_ptr<Control> control_;
    std::mutex data_mutex_;
    std::map<Key, Row> rows_;
    std::vector<StoreChange> tombstones_;
    std::uint64_t revision_ = 0;
    std::uint64_t pruned_before_ = 0;
    std::optional<std::int64_t> last_expire_;
};

} // namespace xaps::test
