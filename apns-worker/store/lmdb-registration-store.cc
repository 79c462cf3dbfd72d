// The embedded registration store: one LMDB environment in a directory.
//
// Databases (named, in one environment, so one transaction covers them all),
// schema version 2:
//   meta        "schema_version" -> uint32 little-endian. A store written by
//               a newer schema is refused (Error config) rather than misread.
//   records     id -> the registration's record (registration-record.h).
//               The id is a number given when the registration is first
//               stored, 8 bytes big-endian: ids only grow, so new records
//               are appended and their pages stay full; a renewal keeps its
//               id.
//   by_user     (MDB_DUPSORT | MDB_DUPFIXED) lower(user) -> ids. A user's
//               registrations are one key's duplicates: find_user,
//               remove_user and the per-user cap cost O(log n + devices of
//               the user), whatever the store size. LIST walks this index,
//               so its order is lower-cased user, then first registration.
//   by_device   (MDB_DUPSORT | MDB_DUPFIXED) compact device token -> ids.
//               remove_token and the 410 path find a token's registrations
//               without a scan.
//   by_hour     (MDB_DUPSORT | MDB_DUPFIXED) hour of last_seen (8 bytes
//               big-endian, the hour number XOR the sign bit, so byte order
//               is numeric order) -> ids. expire() walks only the expired
//               front of it, reading the records of the one hour the cutoff
//               falls in.
// Fixed-size ids as duplicates pack 8 bytes per index entry into LMDB's
// dup pages; removing one registration deletes exactly its four entries and
// rewrites nothing else.
// Measured: 1,000,000 registrations of iOS's shape (UUID account id,
// 64-digit token, two mailboxes) take 244 bytes of store each; schema
// version 1 took 690.
//
// Schema version 1 (an earlier release) kept the record under the key
// lower(user) NUL account id NUL device token in "registrations", with
// "by_token" and "by_last_seen" indexes of those keys. The first open by this
// code upgrades it: it drops the old indexes, then moves the records to the
// new databases in batches, each batch one durable transaction that adds the
// new entries and deletes the old records, so that a crash at any point
// leaves every registration in exactly one of the two forms; the next open
// goes on where it stopped. The schema version becomes 2 in the batch that
// empties "registrations". The worker serves nothing before the upgrade has
// finished.
//
// Stale rows: a put of (user, account id, token) also removes, in the same
// transaction, that user's rows for the same token under another account id
// that are overdue: last seen ios_reregistration_interval (23 h) ago or
// longer. See RegistrationStore::put() for why.
//
// Per-user cap: after a put/import, the user's least recently seen
// registrations beyond max_devices_per_user are removed in the same
// transaction, never the one just written (0 means no cap).
//
// Users are compared case-insensitively by ASCII lower-casing: "Bob" and "bob"
// are one user, while non-ASCII letters compare exactly (Dovecot usernames are
// almost always ASCII; full Unicode case folding would need ICU).
//
// Environment choices: default sync mode (a committed write transaction is on
// disk when mdb_txn_commit returns; no MDB_NOSYNC / MDB_NOMETASYNC), so a put()
// that returned survives kill -9 and power loss; LMDB's copy-on-write pages and
// robust writer mutex let the store open cleanly after a crash at any moment.
// MDB_NOTLS is not set: the worker is single-threaded and never holds two read
// transactions at once. Stale reader slots of a killed process are cleared
// with mdb_reader_check() at open.
//
// Map size: the map is address space and counts toward Dovecot's vsz_limit
// (RLIMIT_AS), so it starts small and grows on demand: a write that finds it
// full (MDB_MAP_FULL) is aborted, the map doubled and the write run again.
// Growth stops at the map limit: max_map_size, or half of the address space
// RLIMIT_AS leaves at open (the other half is for the heap, threads and TLS),
// whichever is smaller. A full map would refuse even removals (copy-on-write
// needs free pages), so new registrations are refused once the pages in use
// come within a reserve of the limit; renewals, removals and expiry use the
// reserve; a removal too large for what is left is split into smaller
// commits. The first refusal, or growth stopping, is told once through
// LmdbStoreOptions::log. A data file already larger than the limit (filled
// under a larger one) opens with its size and a reserve and takes no new
// registrations until enough are gone; one the address space cannot hold
// is Error(config) naming the vsz_limit that would.

#include "lmdb-handle.h"
#include "registration-record.h"
#include "registration-rules.h"
#include "registration-store.h"
#include "registration-validation.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

namespace xaps {

namespace {

constexpr std::uint32_t current_schema_version = 2;
constexpr std::uint32_t format1_schema_version = 1;
constexpr std::string_view schema_version_key = "schema_version";
// A replica's last applied shared-store revision, uint64 little-endian.
constexpr std::string_view applied_revision_key = "applied_revision";
// Bounds the dirty pages of one write transaction when expire() removes many
// registrations; each batch is its own durable commit.
constexpr std::size_t expire_batch_size = 1000;
// Bounds one page_after() (records' bytes, checked between records): a page
// of registrations with a thousand long mailbox names each stays small.
constexpr std::size_t page_max_bytes = std::size_t{256} << 10;
// iOS registers each account again once 23 hours (82,800 s) have passed since
// its last registration, at its next chance to.
constexpr std::int64_t ios_reregistration_interval = 82800;
// by_hour's bucket: expire() reads the records of one bucket at most.
constexpr std::int64_t seconds_per_bucket = 3600;

constexpr std::uint64_t mebibyte = std::uint64_t{1} << 20;
// What new registrations leave free below the map limit, for renewals and
// removals: 5% of the limit, at least 8 MiB (one expiry batch rewrites a few
// thousand pages), but at most a quarter of a small limit.
constexpr std::size_t reserve_floor = std::size_t{8} << 20;
// Address space a store too large for its limit must still leave the process
// to open anyway.
constexpr std::uint64_t heap_headroom = std::uint64_t{64} << 20;

// Rounded up; small sizes that are not whole mebibytes in KiB.
std::string mebibytes(std::uint64_t bytes) {
    if (bytes % mebibyte != 0 && bytes < 16 * mebibyte) {
        return std::to_string((bytes + 1023) / 1024) + " KiB";
    }
    return std::to_string((bytes + mebibyte - 1) / mebibyte) + " MiB";
}

std::size_t page_size() {
    return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::size_t round_up(std::size_t bytes, std::size_t unit) {
    return (bytes + unit - 1) / unit * unit;
}

std::size_t round_down(std::uint64_t bytes, std::size_t unit) {
    const std::uint64_t largest = std::numeric_limits<std::size_t>::max();
    return static_cast<std::size_t>(std::min(bytes, largest) / unit * unit);
}

// The process's RLIMIT_AS (soft); nullopt when unlimited.
std::optional<std::uint64_t> address_space_limit() {
    struct rlimit limit {};
    if (::getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
        return std::nullopt;
    }
    return limit.rlim_cur;
}

// The address space the process maps now (VmSize); 0 when /proc cannot say.
std::uint64_t mapped_address_space() {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t pages = 0;
    statm >> pages;
    return statm ? pages * page_size() : 0;
}

// A write that needed more pages than the map, at its limit, has free. A
// removal that large is done in smaller transactions: each frees pages for
// the next.
class MapAtLimit : public Error {
public:
    explicit MapAtLimit(const std::string &message) : Error(ErrorKind::unavailable, message) {}
};

using Id = std::uint64_t;

// 8 bytes big-endian: byte order is numeric order.
std::string id_key(Id id) {
    std::string key(8, '\0');
    for (int i = 7; i >= 0; --i) {
        key[static_cast<std::size_t>(i)] = static_cast<char>(id & 0xff);
        id >>= 8;
    }
    return key;
}

Id id_from_key(std::string_view key, std::string_view path) {
    if (key.size() != 8) {
        throw Error(ErrorKind::internal, "LMDB store " + std::string(path) + ": malformed id");
    }
    Id id = 0;
    for (unsigned char c : key) {
        id = (id << 8) | c;
    }
    return id;
}

// Rounded toward minus infinity, so that an hour is one bucket on both sides
// of the epoch.
std::int64_t bucket_of(std::int64_t unix_seconds) {
    std::int64_t bucket = unix_seconds / seconds_per_bucket;
    if (unix_seconds % seconds_per_bucket != 0 && unix_seconds < 0) {
        --bucket;
    }
    return bucket;
}

std::string bucket_key(std::int64_t bucket) {
    return id_key(static_cast<std::uint64_t>(bucket) ^ (std::uint64_t{1} << 63));
}

std::int64_t bucket_from_key(std::string_view key, std::string_view path) {
    return static_cast<std::int64_t>(id_from_key(key, path) ^ (std::uint64_t{1} << 63));
}

// page_after()'s position: the by_user entry (lower-cased user, id) last
// looked at, as one string; the id is its last 8 bytes.
std::string page_position(std::string_view lower_user, std::string_view id) {
    std::string position(lower_user);
    position.append(id);
    return position;
}

void make_directory(const std::string &path) {
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
        lmdb::throw_error(errno, path, "mkdir");
    }
}

class LmdbRegistrationStore final : public ReplicaRegistrationStore {
public:
    explicit LmdbRegistrationStore(const LmdbStoreOptions &options)
        : path_(options.path), ttl_(options.ttl.count()),
          max_devices_per_user_(options.max_devices_per_user),
          upgrade_batch_size_(std::max<std::size_t>(options.upgrade_batch_size, 1)),
          log_(options.log) {
        make_directory(path_);
        const std::size_t page = page_size();
        const std::size_t data_size = round_up(data_file_size(), page);
        const std::optional<std::uint64_t> limit = address_space_limit();
        const std::uint64_t in_use = mapped_address_space();
        const std::uint64_t left = limit && *limit > in_use ? *limit - in_use : 0;

        std::size_t map_limit = std::max(round_down(options.max_map_size, page), page);
        std::string reason = "set by xaps_db_max_size: raise it";
        if (limit && left / 2 < map_limit) {
            map_limit = round_down(left / 2, page);
            reason = "set by half of the address space the process's limit of " +
                     mebibytes(*limit) + " left at start: raise service xaps { vsz_limit }";
        }
        if (map_limit < page * 16) {
            throw Error(ErrorKind::config, "LMDB store " + path_ +
                                               ": the process's address-space limit of " +
                                               mebibytes(limit.value_or(0)) +
                                               " leaves no room for its map: raise "
                                               "service xaps { vsz_limit }");
        }
        insert_limit_ = insert_limit_for(map_limit);
        if (data_size > map_limit) {
            // Written under a larger limit: it opens as long as the address
            // space holds it and a heap, takes no new registrations, and has
            // a reserve's room to grow for renewals and removals.
            if (limit && data_size + heap_headroom > left) {
                const std::uint64_t needed = in_use + 2 * std::uint64_t{data_size};
                throw Error(
                    ErrorKind::config,
                    "LMDB store " + path_ + ": its data file needs " + mebibytes(data_size) +
                        " of address space and the process's limit of " + mebibytes(*limit) +
                        " leaves " + mebibytes(left) +
                        ": raise service xaps { vsz_limit } to at least " +
                        std::to_string((needed + 64 * mebibyte - 1) / (64 * mebibyte) * 64) + "M");
            }
            reason = "the data file's size and a reserve, beyond the " + mebibytes(map_limit) +
                     " " + reason;
            map_limit = data_size + std::max(data_size / 20, reserve_floor);
            if (limit) {
                map_limit = std::max(std::min(map_limit, round_down(left - heap_headroom, page)),
                                     data_size);
            }
        }
        set_map_limit(map_limit, std::move(reason));
        map_size_ =
            std::min(std::max(round_up(options.initial_map_size, page), data_size), map_limit_);
        open_environment();
        upgrade_format1();
    }

    void put(const Registration &registration, std::int64_t now) override {
        PreparedPut prepared = prepare_put(registration);
        with_growth([&] {
            const bool room = room_for_new_registrations();
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            if (!put_in(txn, registration, prepared, now, room)) {
                throw store_full_error();
            }
            txn.commit(path_);
        });
    }

    std::vector<std::optional<Error>> put_batch(std::span<const Registration> registrations,
                                                std::int64_t now) override {
        return write_batch(registrations, now, {}).puts;
    }

    std::vector<ImportResult> import_batch(std::span<const Registration> registrations) override {
        return write_batch({}, 0, registrations).imports;
    }

    BatchResults write_batch(std::span<const Registration> puts, std::int64_t now,
                             std::span<const Registration> imports) override {
        BatchResults results;
        results.puts.resize(puts.size());
        results.imports.resize(imports.size());
        std::vector<std::pair<std::size_t, PreparedPut>> valid_puts =
            prepare_all(puts, [&](std::size_t i, const Error &error) { results.puts[i] = error; });
        std::vector<std::pair<std::size_t, PreparedPut>> valid_imports = prepare_all(
            imports, [&](std::size_t i, const Error &error) { results.imports[i].error = error; });
        if (valid_puts.empty() && valid_imports.empty()) {
            return results;
        }
        try {
            with_growth([&] {
                const bool room = room_for_new_registrations();
                auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
                for (const auto &[index, prepared] : valid_puts) {
                    results.puts[index].reset();
                    if (!put_in(txn, puts[index], prepared, now, room)) {
                        results.puts[index] = store_full_error();
                    }
                }
                for (const auto &[index, prepared] : valid_imports) {
                    ImportResult &result = results.imports[index];
                    result = ImportResult{};
                    switch (import_in(txn, imports[index], prepared, room)) {
                    case Imported::added:
                        result.added = true;
                        break;
                    case Imported::exists:
                        break;
                    case Imported::no_room:
                        result.error = store_full_error();
                        break;
                    }
                }
                txn.commit(path_);
            });
        } catch (const Error &error) {
            for (const auto &entry : valid_puts) {
                results.puts[entry.first] = error;
            }
            for (const auto &entry : valid_imports) {
                results.imports[entry.first] = ImportResult{false, error};
            }
        }
        return results;
    }

    bool import(const Registration &registration) override {
        PreparedPut prepared = prepare_put(registration);
        return with_growth([&] {
            const bool room = room_for_new_registrations();
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            switch (import_in(txn, registration, prepared, room)) {
            case Imported::exists:
                return false;
            case Imported::no_room:
                throw store_full_error();
            case Imported::added:
                break;
            }
            txn.commit(path_);
            return true;
        });
    }

    Page page_after(std::string_view user, std::string_view after, std::size_t max_rows,
                    std::int64_t now) override {
        const std::string lower_user = lower_ascii(user);
        max_rows = std::max<std::size_t>(max_rows, 1);
        Page page;
        // A short read transaction per page: one held across pages would pin
        // the pages it sees, and every write meanwhile would grow the file.
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        auto cursor = lmdb::Cursor::open(txn, by_user_, path_);
        MDB_val key{};
        MDB_val id{};
        bool more = false;
        if (after.size() > 8) {
            const std::string_view after_user = after.substr(0, after.size() - 8);
            const std::string_view after_id = after.substr(after.size() - 8);
            key = lmdb::to_val(after_user);
            id = lmdb::to_val(after_id);
            more = cursor.get(key, id, MDB_GET_BOTH_RANGE, path_);
            if (more && lmdb::to_view(id) == after_id) {
                more = cursor.get(key, id, MDB_NEXT, path_);
            } else if (!more) {
                // No id at or after it under that user any more: the next user.
                key = lmdb::to_val(after_user);
                more = cursor.get(key, id, MDB_SET_RANGE, path_);
                if (more && lmdb::to_view(key) == after_user) {
                    more = cursor.get(key, id, MDB_NEXT_NODUP, path_);
                }
            }
        } else if (!after.empty()) {
            throw Error(ErrorKind::invalid_input, "not a listing position");
        } else if (lower_user.empty()) {
            more = cursor.get(key, id, MDB_FIRST, path_);
        } else {
            key = lmdb::to_val(lower_user);
            more = cursor.get(key, id, MDB_SET_KEY, path_);
        }
        std::size_t looked_at = 0;
        std::size_t bytes = 0;
        for (; more && (lower_user.empty() || lmdb::to_view(key) == lower_user);
             more = cursor.get(key, id, MDB_NEXT, path_)) {
            if (looked_at == max_rows || bytes >= page_max_bytes) {
                return page; // next_after: the last one looked at
            }
            ++looked_at;
            page.next_after = page_position(lmdb::to_view(key), lmdb::to_view(id));
            std::string_view value = record_of(txn, lmdb::to_view(id));
            bytes += value.size();
            Registration registration;
            record::decode_into(value, path_, registration);
            if (!expired(registration.last_seen, now)) {
                page.registrations.push_back(std::move(registration));
            }
        }
        page.next_after.clear();
        return page;
    }

    std::vector<Registration> find_user(std::string_view user, std::int64_t now) override {
        std::vector<Registration> found;
        visit_user(user, now,
                   [&](const Registration &registration) { found.push_back(registration); });
        return found;
    }

    // Decodes into one reused Registration: after the first NOTIFYs its
    // strings have the capacity they need, so a lookup allocates nothing.
    void visit_user(std::string_view user, std::int64_t now,
                    const std::function<void(const Registration &)> &visit) override {
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        scratch_user_.assign(user);
        for (char &c : scratch_user_) {
            if (c >= 'A' && c <= 'Z') {
                c = static_cast<char>(c - 'A' + 'a');
            }
        }
        for_each_id_of_user(txn, scratch_user_, [&](std::string_view id) {
            record::decode_into(record_of(txn, id), path_, scratch_);
            if (!expired(scratch_.last_seen, now)) {
                visit(scratch_);
            }
        });
    }

    std::vector<Registration> all() override {
        std::vector<Registration> found;
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        auto cursor = lmdb::Cursor::open(txn, by_user_, path_);
        MDB_val key{};
        MDB_val id{};
        for (bool more = cursor.get(key, id, MDB_FIRST, path_); more;
             more = cursor.get(key, id, MDB_NEXT, path_)) {
            Registration registration;
            record::decode_into(record_of(txn, lmdb::to_view(id)), path_, registration);
            found.push_back(std::move(registration));
        }
        return found;
    }

    std::size_t size() override {
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        MDB_stat stat{};
        lmdb::check(mdb_stat(txn.get(), records_, &stat), path_, "mdb_stat");
        return stat.ms_entries;
    }

    std::size_t remove_user(std::string_view user) override {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            std::vector<Stored> doomed = load_user(txn, lower_ascii(user));
            for (const Stored &stored : doomed) {
                remove_entries(txn, stored);
            }
            txn.commit(path_);
            return doomed.size();
        });
    }

    std::size_t remove_gone_tokens(std::span<const GoneToken> tokens) override {
        if (tokens.empty()) {
            return 0;
        }
        try {
            return remove_gone_tokens_at_once(tokens);
        } catch (const MapAtLimit &) {
            if (tokens.size() == 1) {
                throw;
            }
            const std::size_t half = tokens.size() / 2;
            return remove_gone_tokens(tokens.first(half)) +
                   remove_gone_tokens(tokens.subspan(half));
        }
    }

    std::size_t remove_token(std::string_view device_token) override {
        return remove_token_if(device_token, [](std::int64_t) { return true; });
    }

    std::size_t remove_token_unless_seen_since(std::string_view device_token,
                                               std::int64_t since) override {
        return remove_token_if(device_token,
                               [since](std::int64_t last_seen) { return last_seen <= since; });
    }

    std::size_t remove_all() override {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            MDB_stat stat{};
            lmdb::check(mdb_stat(txn.get(), records_, &stat), path_, "mdb_stat");
            for (MDB_dbi dbi : {records_, by_user_, by_device_, by_hour_}) {
                lmdb::check(mdb_drop(txn.get(), dbi, 0), path_, "mdb_drop");
            }
            txn.commit(path_);
            return static_cast<std::size_t>(stat.ms_entries);
        });
    }

    std::size_t expire(std::int64_t now) override {
        std::size_t removed = 0;
        std::size_t batch_size = expire_batch_size;
        for (;;) {
            std::size_t batch = 0;
            try {
                batch = with_growth([&] { return expire_batch(now, batch_size); });
            } catch (const MapAtLimit &) {
                if (batch_size == 1) {
                    throw;
                }
                batch_size /= 2;
                continue;
            }
            removed += batch;
            if (batch < batch_size) {
                return removed;
            }
        }
    }

    std::uint64_t applied_revision() override {
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        return read_applied_revision(txn);
    }

    void apply(const ChangePage &page) override {
        if (page.changes.empty() && !page.reset) {
            return;
        }
        std::vector<std::optional<PreparedPut>> prepared;
        prepared.reserve(page.changes.size());
        for (const StoreChange &change : page.changes) {
            try {
                if (change.removed) {
                    prepared.emplace_back(PreparedPut{lower_ascii(change.registration.user), {}});
                } else {
                    prepared.emplace_back(prepare_put(change.registration));
                }
            } catch (const Error &) {
                prepared.emplace_back(); // a row this schema cannot hold: skipped
            }
        }
        with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            std::uint64_t revision = read_applied_revision(txn);
            if (page.reset) {
                for (MDB_dbi dbi : {records_, by_user_, by_device_, by_hour_}) {
                    lmdb::check(mdb_drop(txn.get(), dbi, 0), path_, "mdb_drop");
                }
                revision = 0;
            }
            for (std::size_t i = 0; i < page.changes.size(); ++i) {
                const StoreChange &change = page.changes[i];
                revision = std::max(revision, change.revision);
                if (prepared[i]) {
                    apply_in(txn, change, *prepared[i]);
                }
            }
            write_applied_revision(txn, revision);
            txn.commit(path_);
        });
    }

private:
    struct PreparedPut {
        std::string lower_user;
        std::string device_key; // by_device's key: the compact device token
    };

    // One of a user's registrations, as a write reads it.
    struct Stored {
        Id id = 0;
        Registration registration;
    };

    // prepare_put() for each; `refused` hears the index and error of those
    // that fail it.
    template <typename Refused>
    std::vector<std::pair<std::size_t, PreparedPut>>
    prepare_all(std::span<const Registration> registrations, Refused refused) const {
        std::vector<std::pair<std::size_t, PreparedPut>> valid;
        valid.reserve(registrations.size());
        for (std::size_t i = 0; i < registrations.size(); ++i) {
            try {
                valid.emplace_back(i, prepare_put(registrations[i]));
            } catch (const Error &error) {
                refused(i, error);
            }
        }
        return valid;
    }

    // The checks that need no transaction; throws Error(invalid_input).
    static PreparedPut prepare_put(const Registration &registration) {
        validate_registration(registration);
        return {lower_ascii(registration.user),
                record::compact_device_token(registration.device_token)};
    }

    static bool same_device(const Registration &a, const Registration &b) {
        return a.account_id == b.account_id && a.device_token == b.device_token;
    }

    // False, having written nothing, when the registration is new and there
    // is no room for new ones.
    bool put_in(const lmdb::Txn &txn, const Registration &registration, const PreparedPut &prepared,
                std::int64_t now, bool room) {
        std::vector<Stored> others = load_user(txn, prepared.lower_user);
        Registration stored = registration;
        stored.registered_at = now;
        stored.last_seen = now;
        auto same = std::ranges::find_if(others, [&](const Stored &other) {
            return same_device(other.registration, registration);
        });
        if (same != others.end()) {
            stored.registered_at = same->registration.registered_at;
            const std::string id = id_key(same->id);
            lmdb::put(txn, records_, id, record::encode(stored), 0, path_);
            const std::int64_t old_bucket = bucket_of(same->registration.last_seen);
            if (old_bucket != bucket_of(now)) {
                lmdb::del(txn, by_hour_, bucket_key(old_bucket), id, path_);
                lmdb::put(txn, by_hour_, bucket_key(bucket_of(now)), id, 0, path_);
            }
            others.erase(same);
        } else if (!room) {
            return false;
        } else {
            insert(txn, stored, prepared);
        }
        retire_overdue_accounts(txn, others, registration.device_token, now);
        evict_beyond_cap(txn, others);
        return true;
    }

    // One replicated change: the registration as given, or its removal.
    void apply_in(const lmdb::Txn &txn, const StoreChange &change, const PreparedPut &prepared) {
        const Registration &registration = change.registration;
        for (const Stored &stored : load_user(txn, prepared.lower_user)) {
            if (same_device(stored.registration, registration)) {
                remove_entries(txn, stored);
            }
        }
        if (!change.removed) {
            insert(txn, registration, prepared);
        }
    }

    std::uint64_t read_applied_revision(const lmdb::Txn &txn) const {
        auto stored = lmdb::get(txn, meta_, applied_revision_key, path_);
        if (!stored) {
            return 0;
        }
        if (stored->size() != 8) {
            throw Error(ErrorKind::internal,
                        "LMDB store " + path_ + ": malformed applied revision in meta");
        }
        std::uint64_t revision = 0;
        for (std::size_t i = 0; i < 8; ++i) {
            revision |= std::uint64_t{static_cast<unsigned char>((*stored)[i])} << (8 * i);
        }
        return revision;
    }

    void write_applied_revision(const lmdb::Txn &txn, std::uint64_t revision) {
        std::array<char, 8> bytes{};
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            bytes[i] = static_cast<char>((revision >> (8 * i)) & 0xff);
        }
        lmdb::put(txn, meta_, applied_revision_key, {bytes.data(), bytes.size()}, 0, path_);
    }

    // The user's other account ids on this token that missed their
    // re-registration while the phone was listening (it just registered).
    void retire_overdue_accounts(const lmdb::Txn &txn, std::vector<Stored> &others,
                                 std::string_view device_token, std::int64_t now) {
        std::erase_if(others, [&](const Stored &other) {
            if (other.registration.device_token != device_token ||
                other.registration.last_seen > now - ios_reregistration_interval) {
                return false;
            }
            remove_entries(txn, other);
            return true;
        });
    }

    enum class Imported { added, exists, no_room };

    Imported import_in(const lmdb::Txn &txn, const Registration &registration,
                       const PreparedPut &prepared, bool room) {
        std::vector<Stored> others = load_user(txn, prepared.lower_user);
        if (std::ranges::any_of(others, [&](const Stored &other) {
                return same_device(other.registration, registration);
            })) {
            return Imported::exists;
        }
        if (!room) {
            return Imported::no_room;
        }
        insert(txn, registration, prepared);
        evict_beyond_cap(txn, others);
        return Imported::added;
    }

    // A new registration under a new id: appended to records, and entered
    // in the three indexes.
    void insert(const lmdb::Txn &txn, const Registration &registration,
                const PreparedPut &prepared) {
        const std::string id = id_key(next_id_++);
        lmdb::put(txn, records_, id, record::encode(registration), MDB_APPEND, path_);
        lmdb::put(txn, by_user_, prepared.lower_user, id, 0, path_);
        lmdb::put(txn, by_device_, prepared.device_key, id, 0, path_);
        lmdb::put(txn, by_hour_, bucket_key(bucket_of(registration.last_seen)), id, 0, path_);
    }

    void remove_entries(const lmdb::Txn &txn, const Stored &stored) {
        const std::string id = id_key(stored.id);
        const Registration &registration = stored.registration;
        lmdb::del(txn, records_, id, std::nullopt, path_);
        lmdb::del(txn, by_user_, lower_ascii(registration.user), id, path_);
        lmdb::del(txn, by_device_, record::compact_device_token(registration.device_token), id,
                  path_);
        lmdb::del(txn, by_hour_, bucket_key(bucket_of(registration.last_seen)), id, path_);
    }

    // The record an index entry points at.
    std::string_view record_of(const lmdb::Txn &txn, std::string_view id) const {
        auto value = lmdb::get(txn, records_, id, path_);
        if (!value) {
            throw Error(ErrorKind::internal,
                        "LMDB store " + path_ + ": an index points at no registration");
        }
        return *value;
    }

    Stored load(const lmdb::Txn &txn, std::string_view id) const {
        Stored stored;
        stored.id = id_from_key(id, path_);
        record::decode_into(record_of(txn, id), path_, stored.registration);
        return stored;
    }

    // Calls visit(id) for each of the ids an index keeps under `key`.
    template <typename Visit>
    void for_each_id(const lmdb::Txn &txn, MDB_dbi index, std::string_view key, Visit visit) const {
        auto cursor = lmdb::Cursor::open(txn, index, path_);
        MDB_val k = lmdb::to_val(key);
        MDB_val id{};
        for (bool more = cursor.get(k, id, MDB_SET_KEY, path_); more;
             more = cursor.get(k, id, MDB_NEXT_DUP, path_)) {
            visit(lmdb::to_view(id));
        }
    }

    template <typename Visit>
    void for_each_id_of_user(const lmdb::Txn &txn, std::string_view lower_user, Visit visit) const {
        if (!lower_user.empty()) { // LMDB refuses an empty key
            for_each_id(txn, by_user_, lower_user, visit);
        }
    }

    std::vector<Stored> load_user(const lmdb::Txn &txn, std::string_view lower_user) const {
        std::vector<std::string> ids;
        for_each_id_of_user(txn, lower_user, [&](std::string_view id) { ids.emplace_back(id); });
        std::vector<Stored> stored;
        stored.reserve(ids.size());
        for (const std::string &id : ids) {
            stored.push_back(load(txn, id));
        }
        return stored;
    }

    std::size_t remove_gone_tokens_at_once(std::span<const GoneToken> tokens) {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            std::size_t removed = 0;
            for (const GoneToken &gone : tokens) {
                removed += remove_token_in(txn, gone.device_token, [&gone](std::int64_t last_seen) {
                    return !gone.since || last_seen <= *gone.since;
                });
            }
            txn.commit(path_);
            return removed;
        });
    }

    template <typename ShouldRemove>
    std::size_t remove_token_if(std::string_view device_token, ShouldRemove should_remove) {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            std::size_t removed = remove_token_in(txn, device_token, should_remove);
            txn.commit(path_);
            return removed;
        });
    }

    // Removes the token's registrations for which should_remove(last_seen)
    // is true.
    template <typename ShouldRemove>
    std::size_t remove_token_in(const lmdb::Txn &txn, std::string_view device_token,
                                ShouldRemove should_remove) {
        if (device_token.empty()) {
            return 0;
        }
        std::vector<std::string> ids;
        for_each_id(txn, by_device_, record::compact_device_token(device_token),
                    [&](std::string_view id) { ids.emplace_back(id); });
        std::size_t removed = 0;
        for (const std::string &id : ids) {
            Stored stored = load(txn, id);
            if (should_remove(stored.registration.last_seen)) {
                remove_entries(txn, stored);
                ++removed;
            }
        }
        return removed;
    }

    // Keeps the user at max_devices_per_user registrations (0: no cap) by
    // removing the least recently seen of `others`, the user's registrations
    // but the one just written. Ties go to the older registration, then to
    // account id and token order.
    void evict_beyond_cap(const lmdb::Txn &txn, std::vector<Stored> &others) {
        const std::size_t count = others.size() + 1;
        if (max_devices_per_user_ == 0 || count <= max_devices_per_user_) {
            return;
        }
        const std::size_t excess = count - max_devices_per_user_;
        auto order = [](const Stored &stored) {
            const Registration &r = stored.registration;
            return std::tie(r.last_seen, r.registered_at, r.account_id, r.device_token);
        };
        std::partial_sort(others.begin(), others.begin() + static_cast<std::ptrdiff_t>(excess),
                          others.end(),
                          [&](const Stored &a, const Stored &b) { return order(a) < order(b); });
        for (std::size_t i = 0; i < excess; ++i) {
            remove_entries(txn, others[i]);
        }
    }

    // Removes up to batch_size expired registrations in one commit.
    std::size_t expire_batch(std::int64_t now, std::size_t batch_size) {
        auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
        std::vector<Stored> doomed;
        {
            auto cursor = lmdb::Cursor::open(txn, by_hour_, path_);
            MDB_val bucket{};
            MDB_val id{};
            for (bool more = cursor.get(bucket, id, MDB_FIRST, path_);
                 more && doomed.size() < batch_size;
                 more = cursor.get(bucket, id, MDB_NEXT, path_)) {
                // Nothing in a bucket that starts unexpired, or after it, is expired.
                if (!expired(bucket_from_key(lmdb::to_view(bucket), path_) * seconds_per_bucket,
                             now)) {
                    break;
                }
                Stored stored = load(txn, lmdb::to_view(id));
                if (expired(stored.registration.last_seen, now)) {
                    doomed.push_back(std::move(stored));
                }
            }
        }
        for (const Stored &stored : doomed) {
            remove_entries(txn, stored);
        }
        txn.commit(path_);
        return doomed.size();
    }

    // Moves a schema version 1 store into this schema, a batch per commit;
    // see the top of this file.
    void upgrade_format1() {
        if (!format1_) {
            return;
        }
        const auto started = std::chrono::steady_clock::now();
        std::size_t moved = 0;
        std::size_t total = 0;
        bool done = false;
        while (!done) {
            done = with_growth([&] {
                auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
                for (const char *index : {"by_token", "by_last_seen"}) {
                    if (std::optional<MDB_dbi> dbi = open_existing_db(txn, index)) {
                        lmdb::check(mdb_drop(txn.get(), *dbi, 1), path_, "mdb_drop");
                    }
                }
                std::optional<MDB_dbi> old_records = open_existing_db(txn, "registrations");
                std::vector<std::string> keys;
                if (old_records) {
                    if (total == 0) {
                        MDB_stat stat{};
                        lmdb::check(mdb_stat(txn.get(), *old_records, &stat), path_, "mdb_stat");
                        total = stat.ms_entries;
                        if (log_) {
                            log_(LogLevel::info, "upgrading registration store " + path_ +
                                                     " to schema version 2: " +
                                                     std::to_string(total) + " registrations");
                        }
                    }
                    auto cursor = lmdb::Cursor::open(txn, *old_records, path_);
                    MDB_val key{};
                    MDB_val value{};
                    for (bool more = cursor.get(key, value, MDB_FIRST, path_);
                         more && keys.size() < upgrade_batch_size_;
                         more = cursor.get(key, value, MDB_NEXT, path_)) {
                        Registration registration =
                            record::decode_format1(lmdb::to_view(key), lmdb::to_view(value), path_);
                        insert(txn, registration, prepare_put(registration));
                        keys.emplace_back(lmdb::to_view(key));
                    }
                    for (const std::string &key : keys) {
                        lmdb::del(txn, *old_records, key, std::nullopt, path_);
                    }
                }
                const bool last = keys.size() < upgrade_batch_size_;
                if (last) {
                    if (old_records) {
                        lmdb::check(mdb_drop(txn.get(), *old_records, 1), path_, "mdb_drop");
                    }
                    write_schema_version(txn);
                }
                txn.commit(path_);
                moved += keys.size();
                return last;
            });
        }
        format1_ = false;
        if (log_ && total > 0) {
            const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - started);
            log_(LogLevel::info, "upgraded registration store " + path_ + ": " +
                                     std::to_string(moved) + " registrations in " +
                                     std::to_string(elapsed.count()) + " ms");
        }
    }

    // Map growth and the store-full reserve.
    std::size_t data_file_size() const {
        struct stat data {};
        if (::stat((path_ + "/data.mdb").c_str(), &data) != 0) {
            return 0; // a new store
        }
        return static_cast<std::size_t>(data.st_size);
    }

    static std::size_t insert_limit_for(std::size_t map_limit) {
        return map_limit - std::min(std::max(map_limit / 20, reserve_floor), map_limit / 4);
    }

    // A limit only ever comes down, and new registrations with it.
    void set_map_limit(std::size_t bytes, std::string reason) {
        map_limit_ = bytes;
        limit_reason_ = std::move(reason);
        insert_limit_ = std::min(insert_limit_, insert_limit_for(bytes));
    }

    // At map_size_. Also after a failed resize, which leaves LMDB's
    // environment without a map.
    void open_environment() {
        env_ = lmdb::Env(); // closed before it is opened again: one per process
        env_ = lmdb::Env::create(path_);
        lmdb::check(mdb_env_set_maxdbs(env_.get(), 8), path_, "mdb_env_set_maxdbs");
        lmdb::check(mdb_env_set_mapsize(env_.get(), map_size_), path_, "mdb_env_set_mapsize");
        if (int rc = mdb_env_open(env_.get(), path_.c_str(), 0, 0600); rc == ENOMEM) {
            throw Error(ErrorKind::config, "LMDB store " + path_ + ": cannot map " +
                                               mebibytes(map_size_) +
                                               " of address space: raise service xaps { "
                                               "vsz_limit }");
        } else {
            lmdb::check(rc, path_, "mdb_env_open");
        }
        int dead_readers = 0;
        lmdb::check(mdb_reader_check(env_.get(), &dead_readers), path_, "mdb_reader_check");

        auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
        meta_ = open_db(txn, "meta", 0);
        check_schema(txn);
        records_ = open_db(txn, "records", 0);
        const unsigned id_index = MDB_DUPSORT | MDB_DUPFIXED;
        by_user_ = open_db(txn, "by_user", id_index);
        by_device_ = open_db(txn, "by_device", id_index);
        by_hour_ = open_db(txn, "by_hour", id_index);
        next_id_ = std::max(next_id_, first_free_id(txn));
        txn.commit(path_);
    }

    // Runs `write`, which begins and commits its own transaction, again each
    // time the map was full and could grow. LMDB resizes the map only while
    // the process has no transaction: `write`'s was aborted as it threw.
    template <typename Write> std::invoke_result_t<Write &> with_growth(Write write) {
        for (;;) {
            try {
                return write();
            } catch (const lmdb::MapFull &full) {
                if (!grow()) {
                    warn_full();
                    throw MapAtLimit(std::string(full.what()) + " at the map's limit of " +
                                     mebibytes(map_limit_) + " (" + limit_reason_ + ")");
                }
            }
        }
    }

    // Doubles the map, up to its limit. False when it cannot grow.
    bool grow() {
        if (map_size_ >= map_limit_) {
            return false;
        }
        const std::size_t page = page_size();
        std::size_t next = std::min(map_limit_, map_size_ * 2);
        if (const std::optional<std::uint64_t> limit = address_space_limit()) {
            // Heap and threads may have taken more since the open. LMDB
            // unmaps the old map before it maps the new one.
            const std::uint64_t mapped = mapped_address_space();
            const std::uint64_t others = mapped > map_size_ ? mapped - map_size_ : 0;
            const std::size_t room = *limit > others ? round_down(*limit - others, page) : 0;
            if (room / 2 < next) {
                next = std::max(round_down(room / 2, page), map_size_);
                if (next == map_size_) {
                    set_map_limit(map_size_, "half of the address space the process's limit of " +
                                                 mebibytes(*limit) +
                                                 " leaves: raise service xaps { vsz_limit }");
                    return false;
                }
            }
        }
        if (int rc = mdb_env_set_mapsize(env_.get(), next); rc != MDB_SUCCESS) {
            set_map_limit(map_size_, "mapping " + mebibytes(next) + " failed: " + mdb_strerror(rc) +
                                         "; raise service xaps { vsz_limit }");
            open_environment();
            return false;
        }
        map_size_ = next;
        return true;
    }

    // Whether new registrations may take pages: those in use (up to the
    // high-water mark, less the free list) are below the limit less the
    // reserve.
    bool room_for_new_registrations() {
        MDB_envinfo info{};
        lmdb::check(mdb_env_info(env_.get(), &info), path_, "mdb_env_info");
        MDB_stat stat{};
        lmdb::check(mdb_env_stat(env_.get(), &stat), path_, "mdb_env_stat");
        std::size_t used = (static_cast<std::size_t>(info.me_last_pgno) + 1) * stat.ms_psize;
        if (used <= insert_limit_) {
            return true;
        }
        used -= std::min(used, free_pages() * stat.ms_psize);
        if (used <= insert_limit_) {
            return true;
        }
        warn_full();
        return false;
    }

    // Pages on LMDB's free list (database 0): each record holds a count and
    // that many page numbers.
    std::size_t free_pages() {
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        auto cursor = lmdb::Cursor::open(txn, 0, path_);
        MDB_val key{};
        MDB_val value{};
        std::size_t pages = 0;
        for (bool more = cursor.get(key, value, MDB_FIRST, path_); more;
             more = cursor.get(key, value, MDB_NEXT, path_)) {
            std::size_t count = 0;
            if (value.mv_size >= sizeof count) {
                std::memcpy(&count, value.mv_data, sizeof count);
            }
            pages += count;
        }
        return pages;
    }

    Error store_full_error() const {
        return Error(ErrorKind::unavailable,
                     "registration store full: " + path_ + " is within " +
                         mebibytes(map_limit_ - insert_limit_) + " of its limit of " +
                         mebibytes(map_limit_) + " (" + limit_reason_ +
                         "); new devices are refused to keep room for renewals and removals");
    }

    void warn_full() {
        if (warned_full_ || !log_) {
            return;
        }
        warned_full_ = true;
        log_(LogLevel::warning,
             "registration store " + path_ + " is full at its limit of " + mebibytes(map_limit_) +
                 " (" + limit_reason_ +
                 "): new devices are refused from now on; registered ones keep working");
    }

    MDB_dbi open_db(const lmdb::Txn &txn, const char *name, unsigned flags) {
        MDB_dbi dbi = 0;
        lmdb::check(mdb_dbi_open(txn.get(), name, flags | MDB_CREATE, &dbi), path_,
                    std::string("mdb_dbi_open ") + name);
        return dbi;
    }

    std::optional<MDB_dbi> open_existing_db(const lmdb::Txn &txn, const char *name) {
        MDB_dbi dbi = 0;
        int rc = mdb_dbi_open(txn.get(), name, 0, &dbi);
        if (rc == MDB_NOTFOUND) {
            return std::nullopt;
        }
        lmdb::check(rc, path_, std::string("mdb_dbi_open ") + name);
        return dbi;
    }

    void write_schema_version(const lmdb::Txn &txn) {
        std::array<char, 4> bytes{};
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            bytes[i] = static_cast<char>((current_schema_version >> (8 * i)) & 0xff);
        }
        lmdb::put(txn, meta_, schema_version_key, {bytes.data(), bytes.size()}, 0, path_);
    }

    // Sets format1_ for a store that schema version 1 wrote.
    void check_schema(const lmdb::Txn &txn) {
        auto stored = lmdb::get(txn, meta_, schema_version_key, path_);
        if (!stored) {
            write_schema_version(txn);
            return;
        }
        if (stored->size() != 4) {
            throw Error(ErrorKind::internal,
                        "LMDB store " + path_ + ": malformed schema version in meta");
        }
        std::uint32_t version = 0;
        for (std::size_t i = 0; i < 4; ++i) {
            version |= std::uint32_t{static_cast<unsigned char>((*stored)[i])} << (8 * i);
        }
        if (version > current_schema_version) {
            throw Error(ErrorKind::config, "LMDB store " + path_ + ": schema version " +
                                               std::to_string(version) +
                                               " is newer than this worker's " +
                                               std::to_string(current_schema_version) +
                                               " (was the package downgraded?)");
        }
        format1_ = version == format1_schema_version;
    }

    // The id after the largest one stored.
    Id first_free_id(const lmdb::Txn &txn) const {
        auto cursor = lmdb::Cursor::open(txn, records_, path_);
        MDB_val key{};
        MDB_val value{};
        return cursor.get(key, value, MDB_LAST, path_) ? id_from_key(lmdb::to_view(key), path_) + 1
                                                       : 1;
    }

    bool expired(std::int64_t last_seen, std::int64_t now) const { return last_seen < now - ttl_; }

    std::string path_;
    std::int64_t ttl_;
    std::size_t max_devices_per_user_;
    std::size_t upgrade_batch_size_;
    LogSink log_;
    std::size_t map_size_ = 0;  // bytes mapped now
    std::size_t map_limit_ = 0; // bytes the map may grow to
    std::string limit_reason_;  // what sets map_limit_ and how to raise it
    // New registrations are refused when more than this is in use.
    std::size_t insert_limit_ = std::numeric_limits<std::size_t>::max();
    bool warned_full_ = false;
    bool format1_ = false; // schema version 1 is still to be upgraded
    lmdb::Env env_;
    MDB_dbi meta_ = 0;
    MDB_dbi records_ = 0;
    MDB_dbi by_user_ = 0;
    MDB_dbi by_device_ = 0;
    MDB_dbi by_hour_ = 0;
    Id next_id_ = 1;
    Registration scratch_;     // visit_user's decoded record
    std::string scratch_user_; // visit_user's lower-cased user
};

} // namespace

std::unique_ptr<RegistrationStore> open_lmdb_store(const LmdbStoreOptions &options) {
    return std::make_unique<LmdbRegistrationStore>(options);
}

std::unique_ptr<ReplicaRegistrationStore> open_lmdb_replica(const LmdbStoreOptions &options) {
    return std::make_unique<LmdbRegistrationStore>(options);
}

} // namespace xaps
