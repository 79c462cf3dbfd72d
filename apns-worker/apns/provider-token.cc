#include "provider-token.h"

#include "credential-file.h"
#include "openssl-handles.h"
#include "xaps-error.h"

#include <algorithm>
#include <array>

#include <json/json.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

namespace xaps {
namespace {

constexpr std::string_view key_file_what = "APNs token key file";
// ES256 on P-256: r and s are 32 bytes each in the JOSE signature.
constexpr int p256_scalar_bytes = 32;

std::string compact_json(const Json::Value &value) {
    Json::StreamWriterBuilder builder;
    builder["indentation"] = "";
    builder["commentStyle"] = "None";
    return Json::writeString(builder, value);
}

} // namespace

ProviderKey ProviderKey::load(const std::string &path) {
    return from_pem(read_credential_file(key_file_what, path), path);
}

ProviderKey ProviderKey::from_pem(std::string_view pem, const std::string &source) {
    ERR_clear_error();
    openssl::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio)
        throw Error(ErrorKind::internal, "BIO_new_mem_buf: " + openssl_error());
    EVP_PKEY *raw =
        PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase_callback, nullptr);
    if (raw == nullptr) {
        const std::string error = openssl_error();
        if (pem.find("ENCRYPTED") != std::string_view::npos)
            credential_error(key_file_what, source,
                             "the key is encrypted; the .p8 file as Apple issued it is needed");
        if (pem.find("BEGIN CERTIFICATE") != std::string_view::npos)
            credential_error(key_file_what, source,
                             "this is a certificate; token auth needs the .p8 key from Apple");
        credential_error(key_file_what, source, "no PEM private key: " + error);
    }
    ProviderKey key(raw);
    if (EVP_PKEY_is_a(raw, "EC") != 1) {
        const char *type = EVP_PKEY_get0_type_name(raw);
        credential_error(key_file_what, source,
                         std::string("not an EC P-256 key (it is ") +
                             (type != nullptr ? type : "of another type") +
                             "); APNs token auth needs the .p8 key from Apple");
    }
    std::array<char, 64> group{};
    std::size_t group_length = 0;
    if (EVP_PKEY_get_group_name(raw, group.data(), group.size(), &group_length) != 1 ||
        OBJ_sn2nid(group.data()) != NID_X9_62_prime256v1) {
        ERR_clear_error();
        credential_error(key_file_what, source,
                         std::string("not an EC P-256 key (its curve is ") +
                             (group_length > 0 ? group.data() : "unknown") +
                             "); APNs token auth needs the .p8 key from Apple");
    }
    return key;
}

std::string ProviderKey::sign(std::string_view data) const {
    openssl::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
    std::size_t der_length = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &der_length,
                       reinterpret_cast<const unsigned char *>(data.data()), data.size()) != 1)
        throw Error(ErrorKind::internal, "ES256 signing: " + openssl_error());
    std::string der(der_length, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char *>(der.data()), &der_length,
                       reinterpret_cast<const unsigned char *>(data.data()), data.size()) != 1)
        throw Error(ErrorKind::internal, "ES256 signing: " + openssl_error());
    // OpenSSL writes ECDSA-Sig-Value (DER SEQUENCE of r and s); JOSE wants
    // both numbers as fixed-width big-endian bytes, one after the other.
    const auto *cursor = reinterpret_cast<const unsigned char *>(der.data());
    openssl::EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(der_length)));
    if (!sig)
        throw Error(ErrorKind::internal, "ES256 signature: " + openssl_error());
    const BIGNUM *r = nullptr;
    const BIGNUM *s = nullptr;
    ECDSA_SIG_get0(sig.get(), &r, &s);
    std::string jose(2 * p256_scalar_bytes, '\0');
    auto *out = reinterpret_cast<unsigned char *>(jose.data());
    if (BN_bn2binpad(r, out, p256_scalar_bytes) != p256_scalar_bytes ||
        BN_bn2binpad(s, out + p256_scalar_bytes, p256_scalar_bytes) != p256_scalar_bytes)
        throw Error(ErrorKind::internal, "ES256 signature does not fit P-256");
    return jose;
}

std::string base64url_encode(std::string_view bytes) {
    std::string text(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(text.data()),
                                       reinterpret_cast<const unsigned char *>(bytes.data()),
                                       static_cast<int>(bytes.size()));
    text.resize(static_cast<std::size_t>(length));
    while (!text.empty() && text.back() == '=')
        text.pop_back();
    std::replace(text.begin(), text.end(), '+', '-');
    std::replace(text.begin(), text.end(), '/', '_');
    return text;
}

std::optional<std::string> base64url_decode(std::string_view text) {
    if (text.size() % 4 == 1)
        return std::nullopt;
    std::string standard(text);
    for (char &c : standard) {
        if (c == '+' || c == '/' || c == '=')
            return std::nullopt; // standard base64 or padding: not base64url as JWTs use it
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
    }
    const std::size_t padding = (4 - standard.size() % 4) % 4;
    standard.append(padding, '=');
    std::string bytes(standard.size() / 4 * 3, '\0');
    const int length = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(bytes.data()),
                                       reinterpret_cast<const unsigned char *>(standard.data()),
                                       static_cast<int>(standard.size()));
    if (length < 0)
        return std::nullopt;
    // EVP_DecodeBlock counts the bytes the padding stands for as zeros.
    bytes.resize(static_cast<std::size_t>(length) - padding);
    return bytes;
}

std::string make_provider_token(const ProviderKey &key, std::string_view key_id,
                                std::string_view team_id, std::int64_t issued_at) {
    Json::Value header(Json::objectValue);
    header["alg"] = "ES256";
    header["kid"] = Json::Value(key_id.data(), key_id.data() + key_id.size());
    Json::Value claims(Json::objectValue);
    claims["iss"] = Json::Value(team_id.data(), team_id.data() + team_id.size());
    claims["iat"] = Json::Int64(issued_at);
    std::string token = base64url_encode(compact_json(header));
    token += '.';
    token += base64url_encode(compact_json(claims));
    const std::string signature = key.sign(token);
    token += '.';
    token += base64url_encode(signature);
    return token;
}

ProviderToken::ProviderToken(ProviderKey key, std::string key_id, std::string team_id,
                             std::chrono::seconds renew_after, Clock clock)
    : key_(std::move(key)), key_id_(std::move(key_id)), team_id_(std::move(team_id)),
      renew_after_(renew_after), clock_(std::move(clock)) {
    if (renew_after_ < min_renewal_interval || renew_after_ > max_age)
        throw Error(ErrorKind::config, "APNs provider token renewal interval " +
                                           std::to_string(renew_after_.count()) +
                                           "s: must lie between 20 and 60 minutes");
    if (!clock_)
        clock_ = [] { return std::chrono::system_clock::now(); };
    sign(now_seconds());
}

ProviderToken ProviderToken::load(const ApnsSettings &settings, Clock clock) {
    if (settings.token_key_file.empty())
        throw Error(ErrorKind::config, "no APNs token key configured (xaps_apns_token_key_file)");
    const auto missing = [&](std::string_view setting, std::string_view meaning) {
        throw Error(ErrorKind::config, std::string(setting) + " is not set: token auth with " +
                                           settings.token_key_file + " needs " +
                                           std::string(meaning));
    };
    if (settings.key_id.empty())
        missing("xaps_apns_key_id", "the key's id (10 characters, shown next to the key by Apple)");
    if (settings.team_id.empty())
        missing("xaps_apns_team_id", "the Apple developer team id");
    if (settings.topic.empty())
        missing("xaps_apns_topic", "the topic pushes are sent to");
    return ProviderToken(ProviderKey::load(settings.token_key_file), settings.key_id,
                         settings.team_id, settings.token_renew_after, std::move(clock));
}

const std::string &ProviderToken::authorization() {
    const std::int64_t now = now_seconds();
    if (now - issued_at_ >= renew_after_.count() || now < issued_at_)
        sign(now);
    return authorization_;
}

bool ProviderToken::renew_expired() {
    const std::int64_t now = now_seconds();
    if (now - issued_at_ < min_renewal_interval.count())
        return false;
    sign(now);
    return true;
}

std::chrono::seconds ProviderToken::age() const {
    return std::chrono::seconds{now_seconds() - issued_at_};
}

std::int64_t ProviderToken::now_seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_().time_since_epoch()).count();
}

void ProviderToken::sign(std::int64_t now) {
    std::string token = make_provider_token(key_, key_id_, team_id_, now);
    authorization_ = "bearer " + token;
    issued_at_ = now;
    generation_++;
}

} // namespace xaps
