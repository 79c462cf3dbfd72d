#include "hex-digest.h"

#include "xaps-error.h"

namespace xaps {

std::string hex_digest(const EVP_MD *algorithm, std::string_view data, HexCase letters) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &length, algorithm, nullptr) != 1) {
        throw Error(ErrorKind::internal,
                    std::string("OpenSSL cannot compute ") + EVP_MD_get0_name(algorithm));
    }
    const char *digits = letters == HexCase::upper ? "0123456789ABCDEF" : "0123456789abcdef";
    std::string text;
    text.reserve(2 * length);
    for (unsigned int i = 0; i < length; ++i) {
        text.push_back(digits[digest[i] >> 4]);
        text.push_back(digits[digest[i] & 0x0f]);
    }
    return text;
}

} // namespace xaps
