// Where registrations live. The embedded default is LMDB
// (lmdb-registration-store.*); a cluster shares one on PostgreSQL
// (shared-registration-store.h), of which each worker keeps an LMDB replica
// (StoreReplica below).
#pragma once

#include "log-sink.h"
#include "registration.h"
#include "store-change.h"
#include "xaps-error.h"
#include "xaps-settings.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace xaps {

class RegistrationStore {
public:
    virtual ~RegistrationStore() = default;

    // Inserts or replaces the registration keyed (user, account_id,
    // device_token); user compared case-insensitively. A replaced one keeps
    // its registered_at; last_seen becomes `now`, and registered_at too when
    // new. Evicts the user's least recently seen registration beyond the
    // per-user cap. Durable (synced to disk) when it returns; throws
    // Error(unavailable) when it cannot be made durable, and for a new
    // registration (not a renewal) when the store is nearly full: the space
    // left is kept for renewals and removals.
    //
    // Retires the user's rows for the same device token under another
    // account id that were last seen 23 h (82,800 s) or more before `now`.
    // A phone that removed and re-added an account registers the token under
    // a new account id, and the old row would otherwise get pushes until it
    // expires; APNs keeps one push per topic for an offline phone, so a push
    // for the dead account can replace the real one. But two accounts of one
    // phone can also share the token and the push user (xaps_user_lookup),
    // and the registration itself cannot tell the two apart. What the phone
    // sends over time can: iOS registers every account again once 23 h have
    // passed since its last registration, so a live account's row is never
    // older than that while the phone registers another one; a row that is
    // older has missed its re-registration. A live account whose row is
    // retired that way (the phone was silent, e.g. in Low Power Mode, and the
    // other account registered first) is overdue itself and comes back with
    // its own registration moments later. A dead account's row is gone at the
    // latest with the new account's first re-registration, 23 h on.
    virtual void put(const Registration &registration, std::int64_t now) = 0;
    // put() for each registration, all in one durable commit (group commit:
    // one fsync for the batch instead of one per registration). Returns one
    // entry per registration, in order: nullopt when it is stored and durable,
    // else why not. A registration that fails validation fails alone; when the
    // commit itself fails, every other one fails with that error. Later entries
    // see earlier ones (same key twice: the second replaces the first).
    // This default commits one by one, for stores without transactions.
    virtual std::vector<std::optional<Error>> put_batch(std::span<const Registration> registrations,
                                                        std::int64_t now) {
        std::vector<std::optional<Error>> results;
        results.reserve(registrations.size());
        for (const Registration &registration : registrations) {
            try {
                put(registration, now);
                results.emplace_back();
            } catch (const Error &error) {
                results.emplace_back(error);
            }
        }
        return results;
    }
    // Adds a registration with the times it carries, unless one with the same
    // key exists. Returns true when it was added. Durable when it returns.
    virtual bool import(const Registration &registration) = 0;
    // One import_batch() entry: added, already there, or why not.
    struct ImportResult {
        bool added = false;
        std::optional<Error> error;
    };
    // import() for each registration, all in one durable commit. Like
    // put_batch(): one entry per registration, in order; a registration that
    // fails validation fails alone, a failed commit fails them all; a later
    // entry with an earlier one's key "exists". This default commits one by
    // one, for stores without transactions.
    virtual std::vector<ImportResult> import_batch(std::span<const Registration> registrations) {
        std::vector<ImportResult> results(registrations.size());
        for (std::size_t i = 0; i < registrations.size(); ++i) {
            try {
                results[i].added = import(registrations[i]);
            } catch (const Error &error) {
                results[i].error = error;
            }
        }
        return results;
    }

    struct BatchResults {
        std::vector<std::optional<Error>> puts; // as put_batch()'s
        std::vector<ImportResult> imports;      // as import_batch()'s
    };
    // put_batch(puts, now), then import_batch(imports), in one durable
    // commit: group commit's one transaction per event-loop turn. This
    // default commits the two apart.
    virtual BatchResults write_batch(std::span<const Registration> puts, std::int64_t now,
                                     std::span<const Registration> imports) {
        BatchResults results;
        if (!puts.empty()) {
            results.puts = put_batch(puts, now);
        }
        if (!imports.empty()) {
            results.imports = import_batch(imports);
        }
        return results;
    }

    // The user's registrations (case-insensitive), unexpired at `now`.
    virtual std::vector<Registration> find_user(std::string_view user, std::int64_t now) = 0;
    virtual std::vector<Registration> all() = 0;
    virtual std::size_t size() = 0;

    // A bounded slice of the registrations in the store's listing order
    // (lower-cased user, then first registration), so that a listing of any
    // size costs the memory of one page and holds no transaction between
    // pages.
    struct Page {
        // Unexpired at `now`; fewer than asked for when some were expired or
        // large (a store may bound a page's bytes too).
        std::vector<Registration> registrations;
        // Where the next page starts: pass it as `after`. Empty after the
        // last page.
        std::string next_after;
    };
    // Registrations of `user` (case-insensitive; empty: all users) whose key
    // comes after `after` (empty: from the first), looking at no more than
    // `max_rows` of them. Registrations added or removed between pages do not
    // disturb the walk: each is listed at most once, and every one present
    // throughout is listed. A key is the store's own ordering token: only a
    // Page's next_after is a valid `after`.
    virtual Page page_after(std::string_view user, std::string_view after, std::size_t max_rows,
                            std::int64_t now) = 0;

    virtual std::size_t remove_user(std::string_view user) = 0;
    virtual std::size_t remove_token(std::string_view device_token) = 0;
    virtual std::size_t remove_all() = 0;
    // Apple reported the token unregistered at `since` (unix seconds): remove
    // its registrations unless they were seen again after that.
    virtual std::size_t remove_token_unless_seen_since(std::string_view device_token,
                                                       std::int64_t since) = 0;
    // A token Apple reported gone, for remove_gone_tokens().
    struct GoneToken {
        std::string device_token;
        // Apple's "unregistered at" (unix seconds): registrations seen after
        // it are kept. nullopt: all of the token's registrations go.
        std::optional<std::int64_t> since;
    };
    // remove_token / remove_token_unless_seen_since for each entry, in order,
    // all in one commit: one fsync for a batch of 410s instead of one each.
    // Returns how many registrations were removed. This default removes one
    // by one, for stores without transactions.
    virtual std::size_t remove_gone_tokens(std::span<const GoneToken> tokens) {
        std::size_t removed = 0;
        for (const GoneToken &gone : tokens) {
            removed += gone.since ? remove_token_unless_seen_since(gone.device_token, *gone.since)
                                  : remove_token(gone.device_token);
        }
        return removed;
    }
    // Calls `visit` with each of the user's registrations unexpired at `now`,
    // like find_user() without building the vector: the registration passed
    // is valid only during the call, and `visit` must not use the store.
    virtual void visit_user(std::string_view user, std::int64_t now,
                            const std::function<void(const Registration &)> &visit) {
        for (const Registration &registration : find_user(user, now)) {
            visit(registration);
        }
    }
    // Removes registrations whose last_seen is older than the TTL at `now`.
    virtual std::size_t expire(std::int64_t now) = 0;
};

struct LmdbStoreOptions {
    // The settings' values for the store.
    static LmdbStoreOptions from(const XapsSettings &settings) {
        LmdbStoreOptions options;
        options.path = settings.db_path;
        options.max_map_size = static_cast<std::size_t>(settings.db_max_size);
        options.ttl = settings.registration_ttl;
        options.max_devices_per_user = settings.max_devices_per_user;
        return options;
    }

    std::string path; // a directory; xaps_db_path
    // The memory map is address space: it counts toward the process's
    // RLIMIT_AS (Dovecot's vsz_limit). It starts at initial_map_size, or at
    // the data file's size when that is larger, and doubles whenever a write
    // finds it full, up to max_map_size or half of the address space the
    // limit leaves at open, whichever is smaller.
    std::size_t initial_map_size = std::size_t{64} << 20;
    std::size_t max_map_size = std::size_t{16} << 30; // xaps_db_max_size
    std::chrono::seconds ttl{};                       // xaps_registration_ttl
    std::size_t max_devices_per_user{};               // xaps_max_devices_per_user; 0: no cap
    // Registrations an upgrade from an older schema moves per durable commit.
    std::size_t upgrade_batch_size = 10000;
    // Hears, once, a warning naming the limit when the map stops growing.
    LogSink log;
};

// Opens (creating if needed) the store at options.path. Throws Error(config)
// or Error(unavailable) naming the path and LMDB's reason.
std::unique_ptr<RegistrationStore> open_lmdb_store(const LmdbStoreOptions &options);

// The local copy of a shared store, fed with its changes in revision order.
// The shared store applies the per-user cap, the retirement of overdue
// accounts and the room policy before a change gets its revision: a replica
// stores exactly what it is given, so that every replica holds the same rows.
class StoreReplica {
public:
    virtual ~StoreReplica() = default;
    // The revision of the last change applied; 0 for a new replica.
    virtual std::uint64_t applied_revision() = 0;
    // Applies the page in one durable commit that also records the revision
    // of its last change: a crash leaves the replica at a page boundary.
    // A reset page first drops every registration. A change the store's
    // checks refuse is skipped (its revision still counts). Throws
    // Error(unavailable) when the commit fails; nothing is applied then.
    virtual void apply(const ChangePage &page) = 0;
};

// A registration store that is a replica: reads serve pushes and listings,
// apply() feeds it. Its RegistrationStore writes stay usable (tests, tools)
// but the worker sends writes to the shared store instead.
class ReplicaRegistrationStore : public RegistrationStore, public StoreReplica {};

// open_lmdb_store() for a replica (xaps_db_path/shared-replica in the worker):
// the same schema, plus its applied revision.
std::unique_ptr<ReplicaRegistrationStore> open_lmdb_replica(const LmdbStoreOptions &options);

} // namespace xaps
