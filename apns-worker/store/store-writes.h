// The writes the event loop makes to the registration store, as callbacks:
// with LMDB alone they run at once (LocalStoreWrites); with a shared store
// they run on the store thread and are answered later from the loop
// (SharedStoreWrites, shared-store-link.h), so the loop never waits for the
// database. Reads (NOTIFY lookups, LIST, STATUS) go to the RegistrationStore
// directly: the local store, or the shared store's local replica.
#pragma once

#include "registration-store.h"
#include "xaps-error.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace xaps {

enum class PurgeScope { user, token, all };

class StoreWrites {
public:
    virtual ~StoreWrites() = default;

    // Each `done` is called exactly once, from the event loop: during the
    // call (LocalStoreWrites) or later (SharedStoreWrites). It may be
    // dropped uncalled only when the writer itself is destroyed.
    using BatchDone = std::function<void(RegistrationStore::BatchResults results)>;
    // nullopt and a count: done; otherwise why not (count 0).
    using CountDone = std::function<void(const std::optional<Error> &error, std::size_t count)>;

    // RegistrationStore::write_batch(): results as its, one per entry.
    virtual void write_batch(std::vector<Registration> puts, std::int64_t now,
                             std::vector<Registration> imports, BatchDone done) = 0;
    // remove_user(value), remove_token(value) or remove_all(); `value` is
    // used as given (the caller lower-cases tokens).
    virtual void purge(PurgeScope scope, std::string value, CountDone done) = 0;
    // RegistrationStore::remove_gone_tokens().
    virtual void remove_gone_tokens(std::vector<RegistrationStore::GoneToken> tokens,
                                    CountDone done) = 0;
    // RegistrationStore::expire(now); with a shared store, at most once per
    // cluster and interval (count 0 when another worker's run counts).
    virtual void expire(std::int64_t now, CountDone done) = 0;
};

// Today's behaviour: each write is a synchronous store call, `done` runs
// before the call returns.
class LocalStoreWrites final : public StoreWrites {
public:
    explicit LocalStoreWrites(RegistrationStore &store) : store_(store) {}

    void write_batch(std::vector<Registration> puts, std::int64_t now,
                     std::vector<Registration> imports, BatchDone done) override;
    void purge(PurgeScope scope, std::string value, CountDone done) override;
    void remove_gone_tokens(std::vector<RegistrationStore::GoneToken> tokens,
                            CountDone done) override;
    void expire(std::int64_t now, CountDone done) override;

private:
    RegistrationStore &store_;
};

} // namespace xaps
