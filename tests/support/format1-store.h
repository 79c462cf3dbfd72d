// Writes a registration store the way schema version 1 (the releases up to
// the record-format change) laid it out, byte for byte, without the
// product's code: the upgrade is tested against an independent reading of
// the old format. Layout:
//   meta          "schema_version" -> 1 as uint32 little-endian
//   registrations lower(user) NUL account id NUL device token -> record
//   by_token      (DUPSORT) device token -> lower(user) NUL account id
//   by_last_seen  (DUPSORT) last_seen as 8 bytes big-endian XOR sign bit ->
//                 the registrations key
//   record        byte 1, varint aps_version, int64 LE registered_at,
//                 int64 LE last_seen, bytes subtopic, bytes user as
//                 registered (empty when it is the key's lower-cased user),
//                 varint mailbox count, then that many bytes
//                 (varint: unsigned LEB128; bytes: varint length + bytes)
// Test code: failures throw std::runtime_error.
#pragma once

#include "registration.h"

#include <lmdb.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace xaps::test {

class Format1StoreWriter {
public:
    // `path`: an existing, empty directory.
    explicit Format1StoreWriter(const std::string &path,
                                std::size_t map_size = std::size_t{4} << 30) {
        check(mdb_env_create(&env_), "mdb_env_create");
        mdb_env_set_maxdbs(env_, 4);
        mdb_env_set_mapsize(env_, map_size);
        check(mdb_env_open(env_, path.c_str(), 0, 0600), "mdb_env_open");
        begin();
        meta_ = open("meta", 0);
        registrations_ = open("registrations", 0);
        by_token_ = open("by_token", MDB_DUPSORT);
        by_last_seen_ = open("by_last_seen", MDB_DUPSORT);
        put(meta_, "schema_version", std::string("\x01\0\0\0", 4));
    }

    Format1StoreWriter(const Format1StoreWriter &) = delete;
    Format1StoreWriter &operator=(const Format1StoreWriter &) = delete;

    ~Format1StoreWriter() {
        if (txn_ != nullptr) {
            mdb_txn_abort(txn_);
        }
        mdb_env_close(env_);
    }

    void add(const Registration &registration) {
        std::string lower_user = registration.user;
        for (char &c : lower_user) {
            if (c >= 'A' && c <= 'Z') {
                c = static_cast<char>(c - 'A' + 'a');
            }
        }
        std::string owner = lower_user + '\0' + registration.account_id;
        std::string key = owner + '\0' + registration.device_token;
        std::string record(1, '\x01');
        varint(record, registration.aps_version);
        int64(record, registration.registered_at);
        int64(record, registration.last_seen);
        bytes(record, registration.subtopic);
        bytes(record, registration.user == lower_user ? std::string() : registration.user);
        varint(record, registration.mailboxes.size());
        for (const std::string &mailbox : registration.mailboxes) {
            bytes(record, mailbox);
        }
        put(registrations_, key, record);
        put(by_token_, registration.device_token, owner);
        auto biased = static_cast<std::uint64_t>(registration.last_seen) ^ (std::uint64_t{1} << 63);
        std::string time(8, '\0');
        for (int i = 7; i >= 0; --i) {
            time[static_cast<std::size_t>(i)] = static_cast<char>(biased & 0xff);
            biased >>= 8;
        }
        put(by_last_seen_, time, key);
        if (++in_txn_ == 10000) {
            commit();
            begin();
        }
    }

    // Makes everything added durable; the writer stays usable.
    void commit() {
        check(mdb_txn_commit(txn_), "mdb_txn_commit");
        txn_ = nullptr;
        in_txn_ = 0;
    }

private:
    static void check(int rc, const char *what) {
        if (rc != 0) {
            throw std::runtime_error(std::string(what) + ": " + mdb_strerror(rc));
        }
    }

    void begin() {
        if (txn_ == nullptr) {
            check(mdb_txn_begin(env_, nullptr, 0, &txn_), "mdb_txn_begin");
        }
    }

    MDB_dbi open(const char *name, unsigned flags) {
        MDB_dbi dbi = 0;
        check(mdb_dbi_open(txn_, name, flags | MDB_CREATE, &dbi), "mdb_dbi_open");
        return dbi;
    }

    void put(MDB_dbi dbi, std::string_view key, std::string_view value) {
        begin();
        MDB_val k{key.size(), const_cast<char *>(key.data())};
        MDB_val v{value.size(), const_cast<char *>(value.data())};
        check(mdb_put(txn_, dbi, &k, &v, 0), "mdb_put");
    }

    static void varint(std::string &out, std::uint64_t value) {
        while (value >= 0x80) {
            out.push_back(static_cast<char>((value & 0x7f) | 0x80));
            value >>= 7;
        }
        out.push_back(static_cast<char>(value));
    }

    static void int64(std::string &out, std::int64_t value) {
        auto bits = static_cast<std::uint64_t>(value);
        for (int i = 0; i < 8; ++i) {
            out.push_back(static_cast<char>(bits & 0xff));
            bits >>= 8;
        }
    }

    static void bytes(std::string &out, std::string_view value) {
        varint(out, value.size());
        out.append(value);
    }

    MDB_env *env_ = nullptr;
    MDB_txn *txn_ = nullptr;
    MDB_dbi meta_ = 0;
    MDB_dbi registrations_ = 0;
    MDB_dbi by_token_ = 0;
    MDB_dbi by_last_seen_ = 0;
    std::size_t in_txn_ = 0;
};

} // namespace xaps::test
