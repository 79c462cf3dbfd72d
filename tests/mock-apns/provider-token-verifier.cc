#include "provider-token-verifier.h"

#include "xaps-error.h"

#include <json/json.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <vector>

namespace xaps::test {

namespace {

constexpr std::string_view invalid = "InvalidProviderToken";

std::optional<std::string> decode_base64url(std::string_view text) {
    std::string standard(text);
    for (char &c : standard) {
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!std::isalnum(static_cast<unsigned char>(c)))
            return std::nullopt; // '+', '/' and '=' padding do not belong in a JWT
    }
    if (standard.size() % 4 == 1)
        return std::nullopt;
    const size_t padding = (4 - standard.size() % 4) % 4;
    standard.append(padding, '=');
    std::vector<unsigned char> bytes(standard.size() / 4 * 3 + 1);
    const int length =
        EVP_DecodeBlock(bytes.data(), reinterpret_cast<const unsigned char *>(standard.data()),
                        static_cast<int>(standard.size()));
    if (length < 0)
        return std::nullopt;
    return std::string(reinterpret_cast<const char *>(bytes.data()),
                       static_cast<size_t>(length) - padding);
}

std::optional<Json::Value> decode_json_part(std::string_view part) {
    const std::optional<std::string> text = decode_base64url(part);
    if (!text)
        return std::nullopt;
    const std::unique_ptr<Json::CharReader> reader(Json::CharReaderBuilder().newCharReader());
    Json::Value value;
    if (!reader->parse(text->data(), text->data() + text->size(), &value, nullptr) ||
        !value.isObject())
        return std::nullopt;
    return value;
}

ProviderTokenVerifier::Verdict refuse(int status, std::string_view reason,
                                      ProviderTokenVerifier::Verdict verdict) {
    verdict.status = status;
    verdict.reason = reason;
    return verdict;
}

} // namespace

ProviderTokenVerifier::ProviderTokenVerifier(MockApnsTokenAuth config)
    : config_(std::move(config)) {
    std::ifstream file(config_.key_file);
    std::ostringstream pem;
    pem << file.rdbuf();
    const std::string text = pem.str();
    BIO *bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
    EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
    if (key == nullptr) {
        BIO_free(bio);
        bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
        key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    }
    BIO_free(bio);
    ERR_clear_error();
    if (key == nullptr || EVP_PKEY_is_a(key, "EC") != 1) {
        EVP_PKEY_free(key);
        throw Error(ErrorKind::config,
                    "mock APNs token key " + config_.key_file + ": no EC key in PEM");
    }
    key_.reset(key);
}

void ProviderTokenVerifier::expire_tokens_seen() {
    expired_up_to_ = newest_issued_at_;
}

ProviderTokenVerifier::Verdict
ProviderTokenVerifier::check(const std::optional<std::string> &authorization,
                             std::chrono::system_clock::time_point now) {
    Verdict verdict;
    if (!authorization)
        return refuse(403, "MissingProviderToken", verdict);
    // "bearer <token>"; HTTP auth schemes are case-insensitive.
    constexpr std::string_view scheme = "bearer ";
    std::string lowered = authorization->substr(0, scheme.size());
    std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lowered != scheme)
        return refuse(403, invalid, verdict);
    verdict.token = authorization->substr(scheme.size());
    const std::string &token = verdict.token;

    const size_t first_dot = token.find('.');
    const size_t second_dot =
        first_dot == std::string::npos ? first_dot : token.find('.', first_dot + 1);
    if (second_dot == std::string::npos || token.find('.', second_dot + 1) != std::string::npos)
        return refuse(403, invalid, verdict);
    const std::string_view view(token);
    const std::optional<Json::Value> header = decode_json_part(view.substr(0, first_dot));
    const std::optional<Json::Value> claims =
        decode_json_part(view.substr(first_dot + 1, second_dot - first_dot - 1));
    const std::optional<std::string> signature = decode_base64url(view.substr(second_dot + 1));
    if (!header || !claims || !signature)
        return refuse(403, invalid, verdict);
    const Json::Value &iat = (*claims)["iat"];
    if (!iat.isIntegral())
        return refuse(403, invalid, verdict);
    verdict.issued_at = iat.asInt64();
    if ((*header)["alg"] != "ES256" || (*header)["kid"] != config_.key_id ||
        (*claims)["iss"] != config_.team_id ||
        !signature_valid(view.substr(0, second_dot), *signature))
        return refuse(403, invalid, verdict);

    const int64_t now_seconds =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (verdict.issued_at > now_seconds)
        return refuse(403, invalid, verdict);
    if (now_seconds - verdict.issued_at > config_.max_age.count() ||
        (expired_up_to_ && verdict.issued_at <= *expired_up_to_))
        return refuse(403, "ExpiredProviderToken", verdict);
    if (token != current_token_ && verdict.issued_at >= current_issued_at_) {
        if (!current_token_.empty() &&
            verdict.issued_at - current_issued_at_ < config_.min_renewal_interval.count())
            return refuse(429, "TooManyProviderTokenUpdates", verdict);
        current_token_ = token;
        current_issued_at_ = verdict.issued_at;
    }
    newest_issued_at_ = std::max(newest_issued_at_, verdict.issued_at);
    return verdict;
}

bool ProviderTokenVerifier::signature_valid(std::string_view signed_part,
                                            std::string_view jose_signature) const {
    // JOSE carries r || s (32 bytes each for P-256); OpenSSL verifies DER.
    if (jose_signature.size() != 64)
        return false;
    const auto *bytes = reinterpret_cast<const unsigned char *>(jose_signature.data());
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(bytes, 32, nullptr);
    BIGNUM *s = BN_bin2bn(bytes + 32, 32, nullptr);
    if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        return false;
    }
    unsigned char *der = nullptr;
    const int der_length = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const bool valid = der_length > 0 && ctx != nullptr &&
                       EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key_.get()) == 1 &&
                       EVP_DigestVerify(ctx, der, static_cast<size_t>(der_length),
                                        reinterpret_cast<const unsigned char *>(signed_part.data()),
                                        signed_part.size()) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    ERR_clear_error();
    return valid;
}

} // namespace xaps::test
