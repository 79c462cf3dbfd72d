// Move-only owners of LMDB's handles, in the style of lmdb++ and PowerDNS's
// lmdb-safe: a transaction aborts in its destructor unless it was committed,
// so an exception anywhere between begin and commit leaves the store as it
// was. "Not found" is a value (std::optional / false); every other LMDB
// result code becomes an xaps::Error naming the store's path, the operation
// and mdb_strerror().
#pragma once

#include "xaps-error.h"

#include <lmdb.h>

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace xaps::lmdb {

// How a failure is reported: a dependency problem the caller may retry
// (disk full, I/O error, map full), the admin's setup (permissions, not an
// LMDB file), or a broken store / bug.
inline ErrorKind error_kind_of(int rc) noexcept {
    switch (rc) {
    case EACCES:
    case EPERM:
    case EROFS:
    case ENOENT:
    case ENOTDIR:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return ErrorKind::config;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_PANIC:
    case MDB_BAD_RSLOT:
    case MDB_BAD_TXN:
    case MDB_BAD_VALSIZE:
    case MDB_BAD_DBI:
    case MDB_INCOMPATIBLE:
    case MDB_DBS_FULL:
    case EINVAL:
        return ErrorKind::internal;
    default: // MDB_MAP_FULL, MDB_TXN_FULL, MDB_READERS_FULL, ENOSPC, EIO, ENOMEM, EAGAIN...
        return ErrorKind::unavailable;
    }
}

// MDB_MAP_FULL, apart from the other failures: the store may grow its map
// and write again.
class MapFull : public Error {
public:
    explicit MapFull(const std::string &message) : Error(ErrorKind::unavailable, message) {}
};

[[noreturn]] inline void throw_error(int rc, std::string_view path, std::string_view operation) {
    std::string message = "LMDB store ";
    message.append(path).append(": ").append(operation).append(": ").append(mdb_strerror(rc));
    if (rc == MDB_MAP_FULL) {
        throw MapFull(message);
    }
    throw Error(error_kind_of(rc), message);
}

inline void check(int rc, std::string_view path, std::string_view operation) {
    if (rc != MDB_SUCCESS) {
        throw_error(rc, path, operation);
    }
}

// LMDB never writes through an MDB_val given as input, so a const view is safe.
inline MDB_val to_val(std::string_view bytes) noexcept {
    return MDB_val{bytes.size(), const_cast<char *>(bytes.data())};
}

// Valid only until the transaction that produced `val` ends or writes.
inline std::string_view to_view(const MDB_val &val) noexcept {
    return {static_cast<const char *>(val.mv_data), val.mv_size};
}

class Env {
public:
    Env() = default;
    explicit Env(MDB_env *env) noexcept : env_(env) {}
    Env(Env &&other) noexcept : env_(std::exchange(other.env_, nullptr)) {}
    Env &operator=(Env &&other) noexcept {
        std::swap(env_, other.env_);
        return *this;
    }
    Env(const Env &) = delete;
    Env &operator=(const Env &) = delete;
    ~Env() {
        if (env_ != nullptr) {
            mdb_env_close(env_);
        }
    }

    static Env create(std::string_view path) {
        MDB_env *env = nullptr;
        check(mdb_env_create(&env), path, "mdb_env_create");
        return Env(env);
    }

    MDB_env *get() const noexcept { return env_; }

private:
    MDB_env *env_ = nullptr;
};

class Txn {
public:
    Txn() = default;
    Txn(Txn &&other) noexcept : txn_(std::exchange(other.txn_, nullptr)) {}
    Txn &operator=(Txn &&other) noexcept {
        std::swap(txn_, other.txn_);
        return *this;
    }
    Txn(const Txn &) = delete;
    Txn &operator=(const Txn &) = delete;
    ~Txn() { abort(); }

    // flags: 0 for a write transaction, MDB_RDONLY for a snapshot read.
    static Txn begin(MDB_env *env, unsigned flags, std::string_view path) {
        Txn txn;
        check(mdb_txn_begin(env, nullptr, flags, &txn.txn_), path, "mdb_txn_begin");
        return txn;
    }

    // Without MDB_NOSYNC on the environment, a write transaction is on disk
    // when this returns. The transaction is gone either way.
    void commit(std::string_view path) {
        MDB_txn *txn = std::exchange(txn_, nullptr);
        check(mdb_txn_commit(txn), path, "mdb_txn_commit");
    }

    void abort() noexcept {
        if (txn_ != nullptr) {
            mdb_txn_abort(std::exchange(txn_, nullptr));
        }
    }

    MDB_txn *get() const noexcept { return txn_; }

private:
    MDB_txn *txn_ = nullptr;
};

// Must not outlive its transaction (declare it after the Txn it reads).
class Cursor {
public:
    Cursor() = default;
    Cursor(Cursor &&other) noexcept : cursor_(std::exchange(other.cursor_, nullptr)) {}
    Cursor &operator=(Cursor &&other) noexcept {
        std::swap(cursor_, other.cursor_);
        return *this;
    }
    Cursor(const Cursor &) = delete;
    Cursor &operator=(const Cursor &) = delete;
    ~Cursor() {
        if (cursor_ != nullptr) {
            mdb_cursor_close(cursor_);
        }
    }

    static Cursor open(const Txn &txn, MDB_dbi dbi, std::string_view path) {
        Cursor cursor;
        check(mdb_cursor_open(txn.get(), dbi, &cursor.cursor_), path, "mdb_cursor_open");
        return cursor;
    }

    // One cursor step; false when there is no such entry (MDB_NOTFOUND).
    bool get(MDB_val &key, MDB_val &data, MDB_cursor_op op, std::string_view path) {
        int rc = mdb_cursor_get(cursor_, &key, &data, op);
        if (rc == MDB_NOTFOUND) {
            return false;
        }
        check(rc, path, "mdb_cursor_get");
        return true;
    }

    MDB_cursor *get() const noexcept { return cursor_; }

private:
    MDB_cursor *cursor_ = nullptr;
};

// mdb_get as a value: nullopt when the key is absent.
inline std::optional<std::string_view> get(const Txn &txn, MDB_dbi dbi, std::string_view key,
                                           std::string_view path) {
    MDB_val k = to_val(key);
    MDB_val data{};
    int rc = mdb_get(txn.get(), dbi, &k, &data);
    if (rc == MDB_NOTFOUND) {
        return std::nullopt;
    }
    check(rc, path, "mdb_get");
    return to_view(data);
}

inline void put(const Txn &txn, MDB_dbi dbi, std::string_view key, std::string_view value,
                unsigned flags, std::string_view path) {
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    check(mdb_put(txn.get(), dbi, &k, &v, flags), path, "mdb_put");
}

// Deletes the key, or with a DUPSORT database and a value, that one duplicate.
// False when it was not there.
inline bool del(const Txn &txn, MDB_dbi dbi, std::string_view key,
                std::optional<std::string_view> value, std::string_view path) {
    MDB_val k = to_val(key);
    MDB_val v{};
    if (value) {
        v = to_val(*value);
    }
    int rc = mdb_del(txn.get(), dbi, &k, value ? &v : nullptr);
    if (rc == MDB_NOTFOUND) {
        return false;
    }
    check(rc, path, "mdb_del");
    return true;
}

} // namespace xaps::lmdb
