#include "store-writes.h"

#include <utility>

namespace xaps {

namespace {

// Calls `done` with the count `write` returns, or with its error.
template <typename Write> void count_or_error(Write write, const StoreWrites::CountDone &done) {
    std::size_t count = 0;
    std::optional<Error> error;
    try {
        count = write();
    } catch (...) {
        error = current_exception_as_error();
    }
    done(error, count);
}

} // namespace

void LocalStoreWrites::write_batch(std::vector<Registration> puts, std::int64_t now,
                                   std::vector<Registration> imports, BatchDone done) {
    RegistrationStore::BatchResults results;
    try {
        results = store_.write_batch(puts, now, imports);
    } catch (...) {
        const Error error = current_exception_as_error();
        results.puts.assign(puts.size(), error);
        results.imports.assign(imports.size(), {false, error});
    }
    done(std::move(results));
}

void LocalStoreWrites::purge(PurgeScope scope, std::string value, CountDone done) {
    count_or_error(
        [&] {
            switch (scope) {
            case PurgeScope::user:
                return store_.remove_user(value);
            case PurgeScope::token:
                return store_.remove_token(value);
            case PurgeScope::all:
                break;
            }
            return store_.remove_all();
        },
        done);
}

void LocalStoreWrites::remove_gone_tokens(std::vector<RegistrationStore::GoneToken> tokens,
                                          CountDone done) {
    count_or_error([&] { return store_.remove_gone_tokens(tokens); }, done);
}

void LocalStoreWrites::expire(std::int64_t now, CountDone done) {
    count_or_error([&] { return store_.expire(now); }, done);
}

} // namespace xaps
