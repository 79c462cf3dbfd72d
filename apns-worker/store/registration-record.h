// How one registration is laid out in the LMDB store: the record (the value
// under its numeric id) and the compact forms of its identifiers that the
// indexes are keyed by. Format 2; format 1 is decoded only to upgrade a store
// that an earlier release wrote.
//
// Record format 2:
//   byte     format version = 2 (the decoder refuses numbers it does not
//            know, and trailing bytes)
//   varint   aps_version
//   varint   last_seen, zigzag (unix seconds)
//   varint   last_seen - registered_at, modulo 2^64 (small: the seconds
//            between the first and the latest registration)
//   bytes    user, as registered
//   bytes    account id, compact (below)
//   bytes    device token, compact
//   bytes    subtopic, compact
//   varint   number of mailboxes, then that many `bytes`, in registration order
// where varint is unsigned LEB128 and `bytes` is a varint length then the
// bytes.
//
// Compact forms keep the bytes an identifier carries, not its spelling: a
// tag byte, then
//   device token  1: the bytes of a non-empty, even-length, lower-case hex
//                    token (what the IMAP parser stores: 32 bytes for
//                    iOS's 64 digits); 0: any other token as it is
//   account id    1: the 16 bytes of an upper-case UUID
//                    (8-4-4-4-12 hex digits, what iOS sends); 2: of a
//                    lower-case one; 0: any other id as it is
//   subtopic      1: "com.apple.mobilemail"; 0: any other as it is
// Every form decodes to the exact string it was made from, and two strings
// never share a form, so the compact token is a key as good as the token.
//
// Record format 1 (key lower(user) NUL account id NUL device token):
//   byte 1, varint aps_version, int64 LE registered_at, int64 LE last_seen,
//   bytes subtopic, bytes user as registered (empty when it equals the key's
//   lower-cased user), varint mailbox count and that many `bytes`.
#pragma once

#include "registration.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace xaps::record {

std::string compact_device_token(std::string_view device_token);
std::string compact_account_id(std::string_view account_id);

// The record of a registration, format 2.
std::string encode(const Registration &registration);

// Assigns every field of `registration` from a format 2 record, reusing its
// strings' capacity. Throws Error(internal) naming `path` when the record is
// malformed or of another format.
void decode_into(std::string_view value, std::string_view path, Registration &registration);

// A format 1 record under its format 1 key. Throws like decode_into().
Registration decode_format1(std::string_view key, std::string_view value, std::string_view path);

} // namespace xaps::record
