// A message digest as hex text, for the two places that need one: the
// mailbox hashes in a push (MD5, the way iOS Mail hashes mailbox names) and
// `doveadm xaps hash-password` (SHA-256, the way xapsd hashed passwords).
#pragma once

#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace xaps {

enum class HexCase { lower, upper };

// The `algorithm` digest (EVP_md5(), EVP_sha256(), ...) of `data`. Throws
// Error(internal) when OpenSSL cannot compute it.
std::string hex_digest(const EVP_MD *algorithm, std::string_view data, HexCase letters);

} // namespace xaps
