#include "hex-digest.h"

#include <gtest/gtest.h>

namespace {

// Expected values are the published test vectors (RFC 1321, FIPS 180-2).
TEST(HexDigestTest, KnownVectorsInBothCases) {
    struct Row {
        const EVP_MD *algorithm;
        std::string_view data;
        xaps::HexCase letters;
        std::string_view expected;
    };
    const Row rows[] = {
        {EVP_md5(), "", xaps::HexCase::lower, "d41d8cd98f00b204e9800998ecf8427e"},
        {EVP_md5(), "abc", xaps::HexCase::upper, "900150983CD24FB0D6963F7D28E17F72"},
        {EVP_sha256(), "abc", xaps::HexCase::lower,
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.expected);
        EXPECT_EQ(xaps::hex_digest(row.algorithm, row.data, row.letters), row.expected);
    }
}

} // namespace
