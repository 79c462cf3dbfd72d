// What iOS Mail keys a pushed mailbox by: the MD5 of the name it was echoed,
// as UTF-8 bytes, in upper-case hex. Written here from that description with
// OpenSSL alone, so that tests check the product's hashes against a value the
// product did not compute.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace xaps::test {

inline std::string ios_mailbox_hash(std::string_view utf8_name) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(utf8_name.data(), utf8_name.size(), digest, &length, EVP_md5(), nullptr) != 1) {
        throw std::runtime_error("OpenSSL has no MD5");
    }
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string hex;
    for (unsigned int i = 0; i < length; i++) {
        hex.push_back(digits[digest[i] >> 4]);
        hex.push_back(digits[digest[i] & 0x0f]);
    }
    return hex;
}

} // namespace xaps::test
