// Token authentication with APNs: a JWT signed with ES256 (the "provider
// token") made from the .p8 key Apple issues, its key id and the team id,
// sent as `authorization: bearer <token>` on every request instead of a
// client certificate. Apple refuses a token older than an hour (403
// ExpiredProviderToken) and answers 429 TooManyProviderTokenUpdates to a
// provider that signs new ones more often than every 20 minutes, so one
// token is reused between those two bounds.
#pragma once

#include "apns-settings.h"
#include "openssl-handles.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace xaps {

// The .p8 key: an EC P-256 private key in PKCS#8 PEM.
class ProviderKey {
public:
    // Throws Error(config) naming the file and the problem: unreadable, not a
    // PEM private key, encrypted, not an EC P-256 key.
    static ProviderKey load(const std::string &path);
    // The same checks on PEM text; `source` names it in errors.
    static ProviderKey from_pem(std::string_view pem, const std::string &source);

    // The ES256 signature of `data` in JOSE form (RFC 7518, 3.4): r || s,
    // 32 big-endian bytes each, not OpenSSL's DER.
    std::string sign(std::string_view data) const;
    EVP_PKEY *native() const noexcept { return key_.get(); }

private:
    explicit ProviderKey(EVP_PKEY *key) : key_(key) {}

    openssl::EvpPkeyPtr key_;
};

// base64url without padding (RFC 7515, 2), as JWTs use it.
std::string base64url_encode(std::string_view bytes);
// nullopt when `text` is not base64url without padding.
std::optional<std::string> base64url_decode(std::string_view text);

// <header>.<claims>.<signature>: header {"alg":"ES256","kid":key_id},
// claims {"iss":team_id,"iat":issued_at} (unix seconds).
std::string make_provider_token(const ProviderKey &key, std::string_view key_id,
                                std::string_view team_id, std::int64_t issued_at);

// The token in use and when to sign the next one.
class ProviderToken {
public:
    using Clock = std::function<std::chrono::system_clock::time_point()>;
    // Apple's bounds: a token is accepted for an hour, and new ones may not
    // come more often than every 20 minutes.
    static constexpr std::chrono::seconds min_renewal_interval{20 * 60};
    static constexpr std::chrono::seconds max_age{60 * 60};

    // Signs the first token at once, so that a key that cannot sign fails
    // here. renew_after must lie within [min_renewal_interval, max_age]
    // (Error(config) otherwise). The clock defaults to the system clock;
    // tests inject their own.
    ProviderToken(ProviderKey key, std::string key_id, std::string team_id,
                  std::chrono::seconds renew_after = std::chrono::minutes{50}, Clock clock = {});
    // From settings.token_key_file, key_id, team_id, topic and
    // token_renew_after. Throws Error(config) naming the file or the setting
    // that is missing or wrong.
    static ProviderToken load(const ApnsSettings &settings, Clock clock = {});

    // "bearer <token>" for the authorization header. Signs a new token first
    // when the current one is renew_after old, or when the clock went back
    // before its iat (Apple would refuse a token from the future).
    const std::string &authorization();
    // Apple answered 403 ExpiredProviderToken to a request carrying the
    // current token. Signs a new one when the current one is at least
    // min_renewal_interval old and returns true. Returns false otherwise:
    // the clocks disagree by more than 40 minutes, a new token would be
    // refused as well, and renewing again would break Apple's rate limit.
    bool renew_expired();

    // Counts the tokens signed, from 1: tells requests sent with an older
    // token from those sent with the current one.
    std::uint64_t generation() const noexcept { return generation_; }
    std::int64_t issued_at() const noexcept { return issued_at_; }
    std::chrono::seconds age() const;
    const std::string &key_id() const noexcept { return key_id_; }
    const std::string &team_id() const noexcept { return team_id_; }

private:
    std::int64_t now_seconds() const;
    void sign(std::int64_t now);

    ProviderKey key_;
    std::string key_id_;
    std::string team_id_;
    std::chrono::seconds renew_after_;
    Clock clock_;
    std::int64_t issued_at_ = 0;
    std::uint64_t generation_ = 0;
    std::string authorization_;
};

} // namespace xaps
