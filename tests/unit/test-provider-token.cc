// The provider token (ES256 JWT) for APNs token auth: its exact shape, a
// signature that verifies with the public key through OpenSSL alone, key
// loading errors, and when a new token is signed, with an injected clock.
#include "provider-token.h"

#include "test-keys.h"
#include "xaps-error.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace xaps {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::system_clock;

using test::encrypted_private_key_pem;
using test::Key;
using test::make_ec_key;
using test::private_key_pem;
using test::public_key_pem;

Json::Value parse_json(const std::string &text) {
    const std::unique_ptr<Json::CharReader> reader(Json::CharReaderBuilder().newCharReader());
    Json::Value value;
    EXPECT_TRUE(reader->parse(text.data(), text.data() + text.size(), &value, nullptr)) << text;
    return value;
}

std::vector<std::string> split_token(const std::string &token) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = token.find('.', start);
        parts.push_back(token.substr(start, dot - start));
        if (dot == std::string::npos)
            return parts;
        start = dot + 1;
    }
}

// Verifies a JOSE ES256 signature with OpenSSL only: r || s back to DER.
bool verifies(EVP_PKEY *public_key, const std::string &signed_part, const std::string &jose) {
    if (jose.size() != 64)
        return false;
    const auto *bytes = reinterpret_cast<const unsigned char *>(jose.data());
    ECDSA_SIG *sig = ECDSA_SIG_new();
    ECDSA_SIG_set0(sig, BN_bin2bn(bytes, 32, nullptr), BN_bin2bn(bytes + 32, 32, nullptr));
    unsigned char *der = nullptr;
    const int der_length = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const bool valid = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, public_key) == 1 &&
                       EVP_DigestVerify(ctx, der, static_cast<std::size_t>(der_length),
                                        reinterpret_cast<const unsigned char *>(signed_part.data()),
                                        signed_part.size()) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return valid;
}

// The public half only, as Apple holds it: nothing of the private key helps verifying.
Key public_half(EVP_PKEY *key) {
    const std::string pem = public_key_pem(key);
    BIO *bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    Key public_key(PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr));
    BIO_free(bio);
    return public_key;
}

class ProviderTokenTest : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/test-provider-token-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        dir_ = pattern;
        key_ = make_ec_key();
        ASSERT_NE(key_, nullptr);
        key_file_ = write("AuthKey_ABC123DEFG.p8", private_key_pem(key_.get()));
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string write(const std::string &name, const std::string &content) {
        const fs::path path = dir_ / name;
        std::ofstream(path, std::ios::binary) << content;
        return path.string();
    }

    ApnsSettings token_settings() {
        ApnsSettings settings;
        settings.token_key_file = key_file_;
        settings.key_id = "ABC123DEFG";
        settings.team_id = "DEF123GHIJ";
        settings.topic = "com.example.mail";
        return settings;
    }

    // A clock the test moves by hand.
    ProviderToken::Clock manual_clock() {
        return [this] { return now_; };
    }

    fs::path dir_;
    Key key_;
    std::string key_file_;
    system_clock::time_point now_ = system_clock::from_time_t(1700000000);
};

TEST_F(ProviderTokenTest, TokenHasTheExactJwtShapeApnsExpects) {
    const ProviderKey key = ProviderKey::load(key_file_);
    const std::string token = make_provider_token(key, "ABC123DEFG", "DEF123GHIJ", 1700000000);

    const std::vector<std::string> parts = split_token(token);
    ASSERT_EQ(parts.size(), 3u) << token;
    const std::regex base64url_unpadded("[A-Za-z0-9_-]+");
    for (const std::string &part : parts)
        EXPECT_TRUE(std::regex_match(part, base64url_unpadded)) << part;

    Json::Value expected_header;
    expected_header["alg"] = "ES256";
    expected_header["kid"] = "ABC123DEFG";
    EXPECT_EQ(parse_json(*base64url_decode(parts[0])), expected_header);
    Json::Value expected_claims;
    expected_claims["iss"] = "DEF123GHIJ";
    expected_claims["iat"] = 1700000000;
    const Json::Value claims = parse_json(*base64url_decode(parts[1]));
    EXPECT_EQ(claims, expected_claims);
    EXPECT_TRUE(claims["iat"].isIntegral()) << "iat is a number, not a string";
    EXPECT_EQ(base64url_decode(parts[2])->size(), 64u) << "JOSE r || s, not DER";
}

TEST_F(ProviderTokenTest, SignatureVerifiesWithThePublicKeyAndOnlyForItsContent) {
    const ProviderKey key = ProviderKey::load(key_file_);
    const Key public_key = public_half(key_.get());
    ASSERT_NE(public_key, nullptr);
    // ECDSA signatures are random: try several, so that an r or s with
    // leading zero bytes (1 in 128) shows up now and then.
    for (int i = 0; i < 20; i++) {
        SCOPED_TRACE(i);
        const std::string token = make_provider_token(key, "ABC123DEFG", "DEF123GHIJ", 1700000000);
        const std::size_t last_dot = token.rfind('.');
        const std::string signed_part = token.substr(0, last_dot);
        const std::string signature = *base64url_decode(token.substr(last_dot + 1));
        EXPECT_TRUE(verifies(public_key.get(), signed_part, signature));
        std::string other_claims = signed_part;
        other_claims.back() = other_claims.back() == 'A' ? 'B' : 'A';
        EXPECT_FALSE(verifies(public_key.get(), other_claims, signature));
    }
    Key other = make_ec_key();
    const std::string token = make_provider_token(key, "ABC123DEFG", "DEF123GHIJ", 1700000000);
    const std::size_t last_dot = token.rfind('.');
    EXPECT_FALSE(verifies(other.get(), token.substr(0, last_dot),
                          *base64url_decode(token.substr(last_dot + 1))));
}

TEST_F(ProviderTokenTest, Base64urlWithoutPadding) {
    struct Row {
        std::string bytes;
        std::string text;
    };
    const std::vector<Row> rows = {
        {"", ""},
        {"f", "Zg"},
        {"fo", "Zm8"},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg"},
        {"\xfb\xff\xbf", "-_-_"}, // '+' and '/' in standard base64
        {std::string("\0\0", 2), "AAA"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.text);
        EXPECT_EQ(base64url_encode(row.bytes), row.text);
        ASSERT_TRUE(base64url_decode(row.text).has_value());
        EXPECT_EQ(*base64url_decode(row.text), row.bytes);
    }
    for (const std::string bad : {"Zg==", "Zm+v", "Zm/v", "Z", "Zm9vY", "Zm 9v"}) {
        SCOPED_TRACE(bad);
        EXPECT_FALSE(base64url_decode(bad).has_value());
    }
}

TEST_F(ProviderTokenTest, EveryUnusableKeyIsAConfigErrorNamingFileAndProblem) {
    struct Row {
        std::string name;
        std::function<std::string()> path;
        std::string problem;
    };
    const std::vector<Row> rows = {
        {"missing file", [] { return std::string("/nonexistent/AuthKey.p8"); }, "No such file"},
        {"directory", [this] { return dir_.string(); }, "not a regular file"},
        {"garbage", [this] { return write("garbage.p8", "not a key\n"); }, "no PEM private key"},
        {"RSA key",
         [this] {
             Key rsa(EVP_RSA_gen(1024)); // small: only its type matters
             return write("rsa.p8", private_key_pem(rsa.get()));
         },
         "not an EC P-256 key"},
        {"P-384 key",
         [this] {
             Key p384 = make_ec_key("P-384");
             return write("p384.p8", private_key_pem(p384.get()));
         },
         "not an EC P-256 key"},
        {"encrypted key",
         [this] { return write("encrypted.p8", encrypted_private_key_pem(key_.get())); },
         "encrypted"},
        {"public key only", [this] { return write("public.pem", public_key_pem(key_.get())); },
         "no PEM private key"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        const std::string path = row.path();
        try {
            ProviderKey::load(path);
            ADD_FAILURE() << "loaded";
        } catch (const Error &error) {
            EXPECT_EQ(error.kind(), ErrorKind::config);
            const std::string message = error.what();
            EXPECT_NE(message.find(path), std::string::npos) << message;
            EXPECT_NE(message.find(row.problem), std::string::npos) << message;
        }
    }
}

TEST_F(ProviderTokenTest, MissingSettingsAreConfigErrorsNamingTheSetting) {
    struct Row {
        std::function<void(ApnsSettings &)> change;
        std::string setting;
    };
    const std::vector<Row> rows = {
        {[](ApnsSettings &s) { s.key_id.clear(); }, "xaps_apns_key_id"},
        {[](ApnsSettings &s) { s.team_id.clear(); }, "xaps_apns_team_id"},
        {[](ApnsSettings &s) { s.topic.clear(); }, "xaps_apns_topic"},
        {[](ApnsSettings &s) { s.token_key_file.clear(); }, "xaps_apns_token_key_file"},
        {[](ApnsSettings &s) { s.token_renew_after = 19min; }, "between 20 and 60 minutes"},
        {[](ApnsSettings &s) { s.token_renew_after = 61min; }, "between 20 and 60 minutes"},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.setting);
        ApnsSettings settings = token_settings();
        row.change(settings);
        try {
            ProviderToken::load(settings);
            ADD_FAILURE() << "loaded";
        } catch (const Error &error) {
            EXPECT_EQ(error.kind(), ErrorKind::config);
            EXPECT_NE(std::string(error.what()).find(row.setting), std::string::npos)
                << error.what();
        }
    }
    EXPECT_NO_THROW(ProviderToken::load(token_settings()));
}

TEST_F(ProviderTokenTest, AuthorizationIsBearerAndTheTokenCarriesTheSettings) {
    ProviderToken token = ProviderToken::load(token_settings(), manual_clock());
    const std::string authorization = token.authorization();
    ASSERT_TRUE(authorization.starts_with("bearer ")) << authorization;
    const std::vector<std::string> parts = split_token(authorization.substr(7));
    ASSERT_EQ(parts.size(), 3u);
    EXPECT_EQ(parse_json(*base64url_decode(parts[0]))["kid"], "ABC123DEFG");
    const Json::Value claims = parse_json(*base64url_decode(parts[1]));
    EXPECT_EQ(claims["iss"], "DEF123GHIJ");
    EXPECT_EQ(claims["iat"].asInt64(), 1700000000);
    EXPECT_EQ(token.issued_at(), 1700000000);
    EXPECT_EQ(token.generation(), 1u);
}

TEST_F(ProviderTokenTest, ANewTokenAfterRenewAfterAndNotBefore) {
    ApnsSettings settings = token_settings();
    settings.token_renew_after = 50min;
    ProviderToken token = ProviderToken::load(settings, manual_clock());
    const auto start = now_;
    const std::string first = token.authorization();
    struct Row {
        std::chrono::seconds at; // since the first token
        std::uint64_t generation;
        std::chrono::seconds issued_at; // since the first token
    };
    const std::vector<Row> rows = {
        {0s, 1, 0s},         {10min, 1, 0s},          {49min + 59s, 1, 0s},
        {50min, 2, 50min},   {99min + 59s, 2, 50min}, {100min, 3, 100min},
        {200min, 4, 200min},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.at.count());
        now_ = start + row.at;
        token.authorization();
        EXPECT_EQ(token.generation(), row.generation);
        EXPECT_EQ(token.issued_at(), 1700000000 + row.issued_at.count());
        EXPECT_EQ(token.age(), row.at - row.issued_at);
    }
    EXPECT_NE(token.authorization(), first);
}

TEST_F(ProviderTokenTest, ExpiredTokenIsRenewedOnlyWhenTwentyMinutesOld) {
    ProviderToken token = ProviderToken::load(token_settings(), manual_clock());
    const auto start = now_;
    const std::string first = token.authorization();
    now_ = start + 19min + 59s;
    EXPECT_FALSE(token.renew_expired()) << "Apple allows one new token per 20 minutes";
    EXPECT_EQ(token.authorization(), first);
    now_ = start + 20min;
    EXPECT_TRUE(token.renew_expired());
    EXPECT_EQ(token.generation(), 2u);
    EXPECT_NE(token.authorization(), first);
    EXPECT_FALSE(token.renew_expired()) << "right after a renewal";
    EXPECT_EQ(token.generation(), 2u);
}

TEST_F(ProviderTokenTest, OverADayTokensAreNeverRenewedMoreOftenThanEveryTwentyMinutes) {
    ApnsSettings settings = token_settings();
    settings.token_renew_after = 20min; // the most eager schedule allowed
    ProviderToken token = ProviderToken::load(settings, manual_clock());
    std::int64_t last_issued = token.issued_at();
    std::uint64_t last_generation = token.generation();
    for (int step = 0; step < 24 * 60 * 2; step++) { // every 30 s for a day
        now_ += 30s;
        token.authorization();
        token.renew_expired(); // as if Apple called every token expired
        if (token.generation() != last_generation) {
            EXPECT_GE(token.issued_at() - last_issued, 20 * 60) << "at step " << step;
            last_issued = token.issued_at();
            last_generation = token.generation();
        }
        EXPECT_LT(token.age(), 60min) << "Apple refuses tokens older than an hour";
    }
    EXPECT_EQ(last_generation, 1u + 24 * 3);
}

TEST_F(ProviderTokenTest, AClockThatWentBackGetsATokenApplesClockAccepts) {
    ProviderToken token = ProviderToken::load(token_settings(), manual_clock());
    now_ -= 2h;
    token.authorization();
    EXPECT_EQ(token.generation(), 2u);
    EXPECT_EQ(token.issued_at(), 1700000000 - 7200);
}

} // namespace
} // namespace xaps
