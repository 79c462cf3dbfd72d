// A registration store shared by several Dovecot backends, on a database the
// admin already runs (PostgreSQL). It is the cluster's source of truth; each
// worker keeps a local replica (an LMDB store fed by changes_after()) for its
// pushes and listings, so a delivery never waits for the database.
//
// The implementation lives in a module of its own (xaps-store-pgsql.so,
// linked to libpq) that the worker loads only when xaps_shared_store is set:
// the package works without the database's client library installed.
//
// Every call blocks (with a deadline) and is made from one thread, the
// worker's store thread (shared-store-link.h), never from the event loop.
#pragma once

#include "log-sink.h"
#include "registration-store.h"
#include "store-change.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace xaps {

class SharedRegistrationStore : public RegistrationStore {
public:
    // The RegistrationStore calls keep their meaning, and every change they
    // make gets a revision, in commit order across all workers. A call
    // throws Error(unavailable) when the database is unreachable, fails, or
    // does not answer within the timeout; after a failed connection attempt,
    // calls within the backoff fail at once with the same reason, so a
    // REGISTER during an outage is answered quickly.

    // Changes committed after `revision`, oldest first, at most max_changes.
    // A page with fewer changes than asked for ends the backlog. When the
    // changes after `revision` are no longer all known (tombstones pruned),
    // the page has reset set: drop every local copy, the page starts from
    // revision 0.
    virtual ChangePage changes_after(std::uint64_t revision, std::size_t max_changes) = 0;

    enum class Wake { changed, woken, timeout };
    // Waits until another writer may have committed a change (the
    // database's notification), `wake_fd` becomes readable (the caller's
    // queue has work; not read here), or `timeout` passes. Returns timeout at
    // once, after the backoff, while the database is unreachable.
    // This store's own commits do not count (its caller knows of them);
    // after a reconnection it returns changed, since notifications sent
    // while it was not listening are lost.
    virtual Wake wait(std::chrono::milliseconds timeout, int wake_fd) = 0;

    // expire(now), unless any worker ran it less than `interval` ago: expiry
    // runs once per cluster, not once per node. nullopt: another run counts.
    virtual std::optional<std::size_t> expire_once(std::int64_t now,
                                                   std::chrono::seconds interval) = 0;

    // Why the last call failed, for the log and STATUS; empty while working.
    virtual std::string last_error() const = 0;
};

struct SharedStoreOptions {
    std::string conninfo;               // xaps_shared_store: a libpq connection string
    std::chrono::milliseconds timeout;  // xaps_shared_store_timeout: per statement and connect
    std::chrono::seconds ttl{};         // xaps_registration_ttl
    std::size_t max_devices_per_user{}; // xaps_max_devices_per_user; 0: no cap
    // How long removals stay known to changes_after(): a replica offline for
    // longer reloads everything.
    std::chrono::seconds tombstone_retention{std::chrono::hours(24 * 7)};
    LogSink log;
};

} // namespace xaps

// The module's one entry point (dlsym name "xaps_open_shared_store"): opens
// the store, creating its tables when missing. Null with *error_r set when it
// cannot (the database unreachable is not such a case: the store opens and
// its calls fail until the database answers). Never throws.
extern "C" xaps::SharedRegistrationStore *
xaps_open_shared_store(const xaps::SharedStoreOptions *options, std::string *error_r) noexcept;
