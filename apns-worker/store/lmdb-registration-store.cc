// The embedded registration store: one LMDB environment in a directory.
//
// Databases (named, in one environment, so one transaction covers them all):
//   meta          "schema_version" -> uint32 little-endian. A store written by
//                 a newer schema is refused (Error config) rather than misread.
//   registrations primary key -> record (below). The key is
//                     lower(user) NUL account_id NUL device_token
//                 so a user's registrations are one contiguous key range:
//                 find_user / remove_user / the per-user cap are a prefix range
//                 scan, O(log n + devices of the user), whatever the store size.
//                 None of the three parts may contain NUL, which keeps the key
//                 unambiguous and the prefix "lower(user) NUL" exact.
//   by_token      (MDB_DUPSORT) device_token -> "lower(user) NUL account_id"
//                 (its primary keys without the token, which is the key
//                 here). remove_token and the 410 path find a token's
//                 registrations without a scan.
//   by_last_seen  (MDB_DUPSORT) 8-byte big-endian (last_seen XOR sign bit,
//                 so byte order is numeric order) -> primary keys. expire()
//                 walks only the expired front of it. Every put moves the
//                 registration's entry, which costs a few pages per put.
// Removing one registration deletes exactly its three entries (primary,
// by_token, by_last_seen) and rewrites nothing else.
//
// Record format (the primary database's value), version 1:
//   byte         format version = 1 (a later format gets a new number; the
//                decoder refuses numbers it does not know, and trailing bytes)
//   varint       aps_version
//   int64 LE     registered_at (unix seconds, two's complement)
//   int64 LE     last_seen
//   bytes        subtopic
//   bytes        user as registered; empty when it equals the key's lower-cased user
//   varint       number of mailboxes, then that many `bytes`, in registration order
// where varint is unsigned LEB128 and `bytes` is a varint length then the bytes.
//
// Stale rows: a put of (user, account id, token) also removes, in the same
// transaction, that user's rows for the same token under another account id
// that are overdue: last seen ios_reregistration_interval (23 h) ago or
// longer. See RegistrationStore::put() for why.
//
// Per-user cap: after a put/import, the user's least recently seen
// registrations beyond max_devices_per_user are removed in the same
// transaction, never the one just written (0 means no cap). A key longer than
// LMDB's key limit (511 bytes; the field limits would allow 714) is refused
// with Error(invalid_input).
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
// Measured: 1,000,000 registrations with 5 mailboxes each take ~780 MiB of
// map, and find_user costs ~4 us whatever the store size. The worker maps
// ~14 MiB when it opens the store: under vsz_limit = 256M the map may grow
// to ~121 MiB, some 150,000 registrations.

#include "lmdb-handle.h"
#include "registration-rules.h"
#include "registration-store.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
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

constexpr std::uint32_t current_schema_version = 1;
constexpr std::uint8_t record_format_version = 1;
constexpr std::string_view schema_version_key = "schema_version";
// Bounds the dirty pages of one write transaction when expire() removes many
// registrations; each batch is its own durable commit.
constexpr std::size_t expire_batch_size = 1000;
// Bounds one page_after() (records' bytes, checked between records): a page
// of registrations with a thousand long mailbox names each stays small.
constexpr std::size_t page_max_bytes = std::size_t{256} << 10;
// iOS registers each account again once 23 hours (82,800 s) have passed since
// its last registration, at its next chance to.
constexpr std::int64_t ios_reregistration_interval = 82800;

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

std::string user_prefix(std::string_view lower_user) {
    std::string prefix(lower_user);
    prefix.push_back('\0');
    return prefix;
}

std::string primary_key(std::string_view lower_user, std::string_view account_id,
                        std::string_view device_token) {
    std::string key = user_prefix(lower_user);
    key.append(account_id);
    key.push_back('\0');
    key.append(device_token);
    return key;
}

struct KeyParts {
    std::string_view lower_user;
    std::string_view account_id;
    std::string_view device_token;
};

KeyParts split_primary_key(std::string_view key, std::string_view path) {
    auto first = key.find('\0');
    auto second = first == std::string_view::npos ? first : key.find('\0', first + 1);
    if (second == std::string_view::npos) {
        throw Error(ErrorKind::internal,
                    "LMDB store " + std::string(path) + ": malformed registration key");
    }
    return {key.substr(0, first), key.substr(first + 1, second - first - 1),
            key.substr(second + 1)};
}

// A primary key without its device token: the by_token index's value.
std::string_view token_owner(std::string_view key, std::string_view path) {
    KeyParts parts = split_primary_key(key, path);
    return key.substr(0, key.size() - parts.device_token.size() - 1);
}

std::string time_key(std::int64_t unix_seconds) {
    auto biased = static_cast<std::uint64_t>(unix_seconds) ^ (std::uint64_t{1} << 63);
    std::string key(8, '\0');
    for (int i = 7; i >= 0; --i) {
        key[static_cast<std::size_t>(i)] = static_cast<char>(biased & 0xff);
        biased >>= 8;
    }
    return key;
}

std::int64_t time_from_key(std::string_view key) {
    std::uint64_t biased = 0;
    for (unsigned char c : key) {
        biased = (biased << 8) | c;
    }
    return static_cast<std::int64_t>(biased ^ (std::uint64_t{1} << 63));
}

void append_varint(std::string &out, std::uint64_t value) {
    while (value >= 0x80) {
        out.push_back(static_cast<char>((value & 0x7f) | 0x80));
        value >>= 7;
    }
    out.push_back(static_cast<char>(value));
}

void append_int64(std::string &out, std::int64_t value) {
    auto bits = static_cast<std::uint64_t>(value);
    for (int i = 0; i < 8; ++i) {
        out.push_back(static_cast<char>(bits & 0xff));
        bits >>= 8;
    }
}

void append_bytes(std::string &out, std::string_view bytes) {
    append_varint(out, bytes.size());
    out.append(bytes);
}

std::string encode_record(const Registration &registration, std::string_view lower_user) {
    std::string out;
    out.reserve(32 + registration.subtopic.size() + registration.mailboxes.size() * 16);
    out.push_back(static_cast<char>(record_format_version));
    append_varint(out, registration.aps_version);
    append_int64(out, registration.registered_at);
    append_int64(out, registration.last_seen);
    append_bytes(out, registration.subtopic);
    append_bytes(out, registration.user == lower_user ? std::string_view{} : registration.user);
    append_varint(out, registration.mailboxes.size());
    for (const auto &mailbox : registration.mailboxes) {
        append_bytes(out, mailbox);
    }
    return out;
}

class RecordReader {
public:
    RecordReader(std::string_view data, std::string_view path) : data_(data), path_(path) {}

    std::uint8_t byte() {
        need(1);
        return static_cast<std::uint8_t>(data_[pos_++]);
    }

    std::uint64_t varint() {
        std::uint64_t value = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
            std::uint8_t b = byte();
            value |= std::uint64_t{b & 0x7fu} << shift;
            if ((b & 0x80) == 0) {
                return value;
            }
        }
        corrupt("varint too long");
    }

    std::int64_t int64() {
        need(8);
        std::uint64_t bits = 0;
        for (int i = 7; i >= 0; --i) {
            bits =
                (bits << 8) | static_cast<unsigned char>(data_[pos_ + static_cast<std::size_t>(i)]);
        }
        pos_ += 8;
        return static_cast<std::int64_t>(bits);
    }

    std::string_view bytes() {
        std::uint64_t size = varint();
        need(size);
        auto view = data_.substr(pos_, size);
        pos_ += size;
        return view;
    }

    void expect_end() {
        if (pos_ != data_.size()) {
            corrupt("trailing bytes");
        }
    }

    [[noreturn]] void corrupt(std::string_view what) const {
        throw Error(ErrorKind::internal, "LMDB store " + std::string(path_) +
                                             ": corrupt registration record: " + std::string(what));
    }

private:
    void need(std::uint64_t size) const {
        if (size > data_.size() - pos_) {
            corrupt("truncated");
        }
    }

    std::string_view data_;
    std::string_view path_;
    std::size_t pos_ = 0;
};

// Assigns every field, reusing the strings' capacity.
void decode_record_into(std::string_view key, std::string_view value, std::string_view path,
                        Registration &registration) {
    KeyParts parts = split_primary_key(key, path);
    RecordReader reader(value, path);
    if (std::uint8_t format = reader.byte(); format != record_format_version) {
        reader.corrupt("unknown format version " + std::to_string(format));
    }
    registration.account_id = parts.account_id;
    registration.device_token = parts.device_token;
    registration.aps_version = static_cast<unsigned>(reader.varint());
    registration.registered_at = reader.int64();
    registration.last_seen = reader.int64();
    registration.subtopic = reader.bytes();
    std::string_view spelling = reader.bytes();
    registration.user = spelling.empty() ? parts.lower_user : spelling;
    std::uint64_t mailbox_count = reader.varint();
    if (mailbox_count > value.size()) { // each mailbox takes at least one byte
        reader.corrupt("mailbox count");
    }
    registration.mailboxes.resize(mailbox_count);
    for (std::string &mailbox : registration.mailboxes) {
        mailbox = reader.bytes();
    }
    reader.expect_end();
}

Registration decode_record(std::string_view key, std::string_view value, std::string_view path) {
    Registration registration;
    decode_record_into(key, value, path, registration);
    return registration;
}

// Only the fields needed to maintain the indexes, without decoding the rest.
std::int64_t record_last_seen(std::string_view value, std::string_view path) {
    RecordReader reader(value, path);
    if (std::uint8_t format = reader.byte(); format != record_format_version) {
        reader.corrupt("unknown format version " + std::to_string(format));
    }
    reader.varint();
    reader.int64();
    return reader.int64();
}

std::int64_t record_registered_at(std::string_view value, std::string_view path) {
    RecordReader reader(value, path);
    reader.byte();
    reader.varint();
    return reader.int64();
}

void require_key_part(std::string_view value, std::string_view name, std::size_t max_length) {
    if (value.empty()) {
        throw Error(ErrorKind::invalid_input, "registration without " + std::string(name));
    }
    if (value.size() > max_length) {
        throw Error(ErrorKind::invalid_input, "registration " + std::string(name) + " too long");
    }
    if (value.find('\0') != std::string_view::npos) {
        throw Error(ErrorKind::invalid_input,
                    "registration " + std::string(name) + " contains a NUL byte");
    }
}

void validate(const Registration &registration) {
    require_key_part(registration.user, "user", limits::max_user_length);
    require_key_part(registration.account_id, "account id", limits::max_account_id_length);
    require_key_part(registration.device_token, "device token", limits::max_device_token_length);
    if (registration.subtopic.size() > limits::max_subtopic_length) {
        throw Error(ErrorKind::invalid_input, "registration subtopic too long");
    }
    if (registration.mailboxes.size() > limits::max_mailboxes) {
        throw Error(ErrorKind::invalid_input, "registration has too many mailboxes");
    }
    for (const auto &mailbox : registration.mailboxes) {
        if (mailbox.size() > limits::max_mailbox_name_length) {
            throw Error(ErrorKind::invalid_input, "registration mailbox name too long");
        }
    }
}

void make_directory(const std::string &path) {
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
        lmdb::throw_error(errno, path, "mkdir");
    }
}

class LmdbRegistrationStore final : public RegistrationStore {
public:
    explicit LmdbRegistrationStore(const LmdbStoreOptions &options)
        : path_(options.path), ttl_(options.ttl.count()),
          max_devices_per_user_(options.max_devices_per_user), log_(options.log) {
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
    }

    void put(const Registration &registration, std::int64_t now) override {
        PreparedPut prepared = prepare_put(registration);
        with_growth([&] {
            const bool room = room_for_new_registrations();
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            if (!room && !lmdb::get(txn, registrations_, prepared.key, path_)) {
                throw store_full_error();
            }
            put_in(txn, registration, prepared, now);
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
                    if (!room && !lmdb::get(txn, registrations_, prepared.key, path_)) {
                        results.puts[index] = store_full_error();
                        continue;
                    }
                    results.puts[index].reset();
                    put_in(txn, puts[index], prepared, now);
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

private:
    struct PreparedPut {
        std::string lower_user;
        std::string key;
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
    PreparedPut prepare_put(const Registration &registration) const {
        validate(registration);
        PreparedPut prepared;
        prepared.lower_user = lower_ascii(registration.user);
        prepared.key =
            primary_key(prepared.lower_user, registration.account_id, registration.device_token);
        check_key_size(prepared.key);
        return prepared;
    }

    void put_in(const lmdb::Txn &txn, const Registration &registration, const PreparedPut &prepared,
                std::int64_t now) {
        const std::string &lower_user = prepared.lower_user;
        const std::string &key = prepared.key;
        Registration stored = registration;
        stored.registered_at = now;
        stored.last_seen = now;
        if (auto old = lmdb::get(txn, registrations_, key, path_)) {
            std::int64_t old_last_seen = record_last_seen(*old, path_);
            stored.registered_at = record_registered_at(*old, path_);
            lmdb::del(txn, by_last_seen_, time_key(old_last_seen), key, path_);
        } else {
            lmdb::put(txn, by_token_, registration.device_token, token_owner(key, path_), 0, path_);
        }
        lmdb::put(txn, registrations_, key, encode_record(stored, lower_user), 0, path_);
        lmdb::put(txn, by_last_seen_, time_key(now), key, 0, path_);
        retire_overdue_accounts(txn, prepared, registration.device_token, now);
        evict_beyond_cap(txn, lower_user, key);
    }

    // The user's other account ids on this token that missed their
    // re-registration while the phone was listening (it just registered).
    void retire_overdue_accounts(const lmdb::Txn &txn, const PreparedPut &prepared,
                                 std::string_view device_token, std::int64_t now) {
        const std::string prefix = user_prefix(prepared.lower_user);
        const std::string kept_owner(token_owner(prepared.key, path_));
        remove_token_in(txn, device_token, [&](std::string_view owner, std::int64_t last_seen) {
            return owner.starts_with(prefix) && owner != kept_owner &&
                   last_seen <= now - ios_reregistration_interval;
        });
    }

    enum class Imported { added, exists, no_room };

    Imported import_in(const lmdb::Txn &txn, const Registration &registration,
                       const PreparedPut &prepared, bool room) {
        if (lmdb::get(txn, registrations_, prepared.key, path_)) {
            return Imported::exists;
        }
        if (!room) {
            return Imported::no_room;
        }
        const std::string &key = prepared.key;
        lmdb::put(txn, registrations_, key, encode_record(registration, prepared.lower_user), 0,
                  path_);
        lmdb::put(txn, by_token_, registration.device_token, token_owner(key, path_), 0, path_);
        lmdb::put(txn, by_last_seen_, time_key(registration.last_seen), key, 0, path_);
        evict_beyond_cap(txn, prepared.lower_user, key);
        return Imported::added;
    }

public:
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
        const std::string prefix = user.empty() ? std::string() : user_prefix(lower_ascii(user));
        max_rows = std::max<std::size_t>(max_rows, 1);
        Page page;
        // A short read transaction per page: one held across pages would pin
        // the pages it sees, and every write meanwhile would grow the file.
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        auto cursor = lmdb::Cursor::open(txn, registrations_, path_);
        MDB_val key = lmdb::to_val(after.empty() ? std::string_view(prefix) : after);
        MDB_val value{};
        bool more = after.empty() && prefix.empty() ? cursor.get(key, value, MDB_FIRST, path_)
                                                    : cursor.get(key, value, MDB_SET_RANGE, path_);
        if (more && !after.empty() && lmdb::to_view(key) == after) {
            more = cursor.get(key, value, MDB_NEXT, path_);
        }
        std::size_t looked_at = 0;
        std::size_t bytes = 0;
        for (; more && lmdb::to_view(key).starts_with(prefix);
             more = cursor.get(key, value, MDB_NEXT, path_)) {
            if (looked_at == max_rows || bytes >= page_max_bytes) {
                return page; // next_after: the last one looked at
            }
            ++looked_at;
            bytes += key.mv_size + value.mv_size;
            page.next_after.assign(lmdb::to_view(key));
            Registration registration =
                decode_record(lmdb::to_view(key), lmdb::to_view(value), path_);
            if (!expired(registration.last_seen, now)) {
                page.registrations.push_back(std::move(registration));
            }
        }
        page.next_after.clear();
        return page;
    }

    std::vector<Registration> find_user(std::string_view user, std::int64_t now) override {
        std::vector<Registration> found;
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        for_each_of_user(txn, lower_ascii(user), [&](std::string_view key, std::string_view value) {
            Registration registration = decode_record(key, value, path_);
            if (!expired(registration.last_seen, now)) {
                found.push_back(std::move(registration));
            }
        });
        return found;
    }

    // Decodes into one reused Registration: after the first NOTIFYs its
    // strings have the capacity they need, so a lookup allocates nothing.
    void visit_user(std::string_view user, std::int64_t now,
                    const std::function<void(const Registration &)> &visit) override {
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        scratch_prefix_.assign(user);
        for (char &c : scratch_prefix_) {
            if (c >= 'A' && c <= 'Z') {
                c = static_cast<char>(c - 'A' + 'a');
            }
        }
        scratch_prefix_.push_back('\0');
        for_each_with_prefix(txn, scratch_prefix_,
                             [&](std::string_view key, std::string_view value) {
                                 decode_record_into(key, value, path_, scratch_);
                                 if (!expired(scratch_.last_seen, now)) {
                                     visit(scratch_);
                                 }
                             });
    }

    std::vector<Registration> all() override {
        std::vector<Registration> found;
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        auto cursor = lmdb::Cursor::open(txn, registrations_, path_);
        MDB_val key{};
        MDB_val value{};
        for (bool more = cursor.get(key, value, MDB_FIRST, path_); more;
             more = cursor.get(key, value, MDB_NEXT, path_)) {
            found.push_back(decode_record(lmdb::to_view(key), lmdb::to_view(value), path_));
        }
        return found;
    }

    std::size_t size() override {
        auto txn = lmdb::Txn::begin(env_.get(), MDB_RDONLY, path_);
        MDB_stat stat{};
        lmdb::check(mdb_stat(txn.get(), registrations_, &stat), path_, "mdb_stat");
        return stat.ms_entries;
    }

    std::size_t remove_user(std::string_view user) override {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            std::vector<std::pair<std::string, std::int64_t>> doomed;
            for_each_of_user(txn, lower_ascii(user),
                             [&](std::string_view key, std::string_view value) {
                                 doomed.emplace_back(key, record_last_seen(value, path_));
                             });
            for (const auto &[key, last_seen] : doomed) {
                remove_entries(txn, key, last_seen);
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

    std::size_t remove_gone_tokens_at_once(std::span<const GoneToken> tokens) {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            std::size_t removed = 0;
            for (const GoneToken &gone : tokens) {
                removed += remove_token_in(txn, gone.device_token,
                                           [&gone](std::string_view, std::int64_t last_seen) {
                                               return !gone.since || last_seen <= *gone.since;
                                           });
            }
            txn.commit(path_);
            return removed;
        });
    }

    std::size_t remove_token(std::string_view device_token) override {
        return remove_token_if(device_token, [](std::string_view, std::int64_t) { return true; });
    }

    std::size_t remove_token_unless_seen_since(std::string_view device_token,
                                               std::int64_t since) override {
        return remove_token_if(device_token, [since](std::string_view, std::int64_t last_seen) {
            return last_seen <= since;
        });
    }

    std::size_t remove_all() override {
        return with_growth([&] {
            auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
            MDB_stat stat{};
            lmdb::check(mdb_stat(txn.get(), registrations_, &stat), path_, "mdb_stat");
            for (MDB_dbi dbi : {registrations_, by_token_, by_last_seen_}) {
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

private:
    // Removes up to batch_size expired registrations in one commit.
    std::size_t expire_batch(std::int64_t now, std::size_t batch_size) {
        auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
        std::vector<std::pair<std::string, std::int64_t>> doomed;
        {
            auto cursor = lmdb::Cursor::open(txn, by_last_seen_, path_);
            MDB_val time{};
            MDB_val key{};
            for (bool more = cursor.get(time, key, MDB_FIRST, path_);
                 more && doomed.size() < batch_size;
                 more = cursor.get(time, key, MDB_NEXT, path_)) {
                std::int64_t last_seen = time_from_key(lmdb::to_view(time));
                if (!expired(last_seen, now)) {
                    break;
                }
                doomed.emplace_back(lmdb::to_view(key), last_seen);
            }
        }
        for (const auto &[key, last_seen] : doomed) {
            remove_entries(txn, key, last_seen);
        }
        txn.commit(path_);
        return doomed.size();
    }

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
        lmdb::check(mdb_env_set_maxdbs(env_.get(), 4), path_, "mdb_env_set_maxdbs");
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
        max_key_size_ = static_cast<std::size_t>(mdb_env_get_maxkeysize(env_.get()));

        auto txn = lmdb::Txn::begin(env_.get(), 0, path_);
        meta_ = open_db(txn, "meta", 0);
        registrations_ = open_db(txn, "registrations", 0);
        by_token_ = open_db(txn, "by_token", MDB_DUPSORT);
        by_last_seen_ = open_db(txn, "by_last_seen", MDB_DUPSORT);
        check_schema(txn);
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

    void check_schema(const lmdb::Txn &txn) {
        auto stored = lmdb::get(txn, meta_, schema_version_key, path_);
        if (!stored) {
            std::array<char, 4> bytes{};
            for (std::size_t i = 0; i < bytes.size(); ++i) {
                bytes[i] = static_cast<char>((current_schema_version >> (8 * i)) & 0xff);
            }
            lmdb::put(txn, meta_, schema_version_key, {bytes.data(), bytes.size()}, 0, path_);
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
        // Older schema versions would be migrated here; version 1 is the first.
    }

    void check_key_size(std::string_view key) const {
        if (key.size() > max_key_size_) {
            throw Error(ErrorKind::invalid_input,
                        "registration key (user, account id, device token) is longer than "
                        "the store's limit of " +
                            std::to_string(max_key_size_) + " bytes");
        }
    }

    bool expired(std::int64_t last_seen, std::int64_t now) const { return last_seen < now - ttl_; }

    template <typename Visit>
    void for_each_of_user(const lmdb::Txn &txn, std::string_view lower_user, Visit visit) {
        for_each_with_prefix(txn, user_prefix(lower_user), visit);
    }

    // `prefix`: "lower(user) NUL", see user_prefix().
    template <typename Visit>
    void for_each_with_prefix(const lmdb::Txn &txn, std::string_view prefix, Visit visit) {
        auto cursor = lmdb::Cursor::open(txn, registrations_, path_);
        MDB_val key = lmdb::to_val(prefix);
        MDB_val value{};
        for (bool more = cursor.get(key, value, MDB_SET_RANGE, path_);
             more && lmdb::to_view(key).starts_with(prefix);
             more = cursor.get(key, value, MDB_NEXT, path_)) {
            visit(lmdb::to_view(key), lmdb::to_view(value));
        }
    }

    void remove_entries(const lmdb::Txn &txn, const std::string &key, std::int64_t last_seen) {
        std::string_view token = split_primary_key(key, path_).device_token;
        lmdb::del(txn, registrations_, key, std::nullopt, path_);
        lmdb::del(txn, by_token_, token, token_owner(key, path_), path_);
        lmdb::del(txn, by_last_seen_, time_key(last_seen), key, path_);
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

    // Removes the token's registrations for which should_remove(owner,
    // last_seen) is true; owner is the registration key without the token.
    template <typename ShouldRemove>
    std::size_t remove_token_in(const lmdb::Txn &txn, std::string_view device_token,
                                ShouldRemove should_remove) {
        std::vector<std::string> owners;
        {
            auto cursor = lmdb::Cursor::open(txn, by_token_, path_);
            MDB_val token = lmdb::to_val(device_token);
            MDB_val owner{};
            for (bool more = cursor.get(token, owner, MDB_SET_KEY, path_); more;
                 more = cursor.get(token, owner, MDB_NEXT_DUP, path_)) {
                owners.emplace_back(lmdb::to_view(owner));
            }
        }
        std::size_t removed = 0;
        for (const std::string &owner : owners) {
            std::string key = owner;
            key.push_back('\0');
            key.append(device_token);
            auto value = lmdb::get(txn, registrations_, key, path_);
            if (!value) {
                throw Error(ErrorKind::internal,
                            "LMDB store " + path_ + ": by_token index points at nothing");
            }
            std::int64_t last_seen = record_last_seen(*value, path_);
            if (should_remove(std::string_view(owner), last_seen)) {
                remove_entries(txn, key, last_seen);
                ++removed;
            }
        }
        return removed;
    }

    // Keeps the user at max_devices_per_user registrations (0: no cap) by
    // removing the least recently seen ones, never `kept_key` (the one just
    // written). Ties go to the older registration, then to key order.
    void evict_beyond_cap(const lmdb::Txn &txn, std::string_view lower_user,
                          std::string_view kept_key) {
        if (max_devices_per_user_ == 0) {
            return;
        }
        struct Candidate {
            std::int64_t last_seen;
            std::int64_t registered_at;
            std::string key;
        };
        std::vector<Candidate> candidates;
        std::size_t count = 0;
        for_each_of_user(txn, lower_user, [&](std::string_view key, std::string_view value) {
            ++count;
            if (key != kept_key) {
                candidates.push_back({record_last_seen(value, path_),
                                      record_registered_at(value, path_), std::string(key)});
            }
        });
        if (count <= max_devices_per_user_) {
            return;
        }
        std::size_t excess = count - max_devices_per_user_;
        std::partial_sort(candidates.begin(),
                          candidates.begin() + static_cast<std::ptrdiff_t>(excess),
                          candidates.end(), [](const Candidate &a, const Candidate &b) {
                              return std::tie(a.last_seen, a.registered_at, a.key) <
                                     std::tie(b.last_seen, b.registered_at, b.key);
                          });
        for (std::size_t i = 0; i < excess; ++i) {
            remove_entries(txn, candidates[i].key, candidates[i].last_seen);
        }
    }

    std::string path_;
    std::int64_t ttl_;
    std::size_t max_devices_per_user_;
    LogSink log_;
    std::size_t map_size_ = 0;  // bytes mapped now
    std::size_t map_limit_ = 0; // bytes the map may grow to
    std::string limit_reason_;  // what sets map_limit_ and how to raise it
    // New registrations are refused when more than this is in use.
    std::size_t insert_limit_ = std::numeric_limits<std::size_t>::max();
    bool warned_full_ = false;
    lmdb::Env env_;
    std::size_t max_key_size_ = 0;
    MDB_dbi meta_ = 0;
    MDB_dbi registrations_ = 0;
    MDB_dbi by_token_ = 0;
    MDB_dbi by_last_seen_ = 0;
    Registration scratch_;       // visit_user's decoded record
    std::string scratch_prefix_; // visit_user's "lower(user) NUL"
};

} // namespace

std::unique_ptr<RegistrationStore> open_lmdb_store(const LmdbStoreOptions &options) {
    return std::make_unique<LmdbRegistrationStore>(options);
}

} // namespace xaps
