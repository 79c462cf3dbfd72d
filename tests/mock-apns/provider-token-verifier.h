// How the mock APNs checks a provider token (token auth): written apart from
// the worker's own JWT code, with OpenSSL and jsoncpp directly, so that the
// tests compare the worker against an independent reading of Apple's rules.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/evp.h>

namespace xaps::test {

struct MockApnsTokenAuth {
    // PEM: the EC P-256 public key, or the private key (.p8) it belongs to.
    std::string key_file;
    std::string key_id;  // the JWT header's "kid"
    std::string team_id; // the claims' "iss"
    // The apns-topic values this team may push to (its apps' bundle ids);
    // any other topic is answered 400 TopicDisallowed.
    std::vector<std::string> topics;
    // Older tokens get 403 ExpiredProviderToken, as at Apple.
    std::chrono::seconds max_age{3600};
    // A new token sooner than this after the one in use gets 429
    // TooManyProviderTokenUpdates, as at Apple.
    std::chrono::seconds min_renewal_interval{1200};
};

class ProviderTokenVerifier {
public:
    struct Verdict {
        int status = 200;           // 200: accepted; otherwise the answer APNs gives
        std::string reason;         // InvalidProviderToken, ExpiredProviderToken, ...
        std::string token;          // the JWT, without "bearer "
        std::int64_t issued_at = 0; // its iat, when it was readable
    };

    // Throws xaps::Error(config) when the key file is unusable.
    explicit ProviderTokenVerifier(MockApnsTokenAuth config);

    // The verdict on one request's authorization header (nullopt: absent) at `now`.
    Verdict check(const std::optional<std::string> &authorization,
                  std::chrono::system_clock::time_point now);
    // From now on tokens issued at or before the newest one seen so far are
    // answered 403 ExpiredProviderToken, as Apple does once they are an hour old.
    void expire_tokens_seen();

private:
    struct EvpPkeyFree {
        void operator()(EVP_PKEY *key) const noexcept { EVP_PKEY_free(key); }
    };
    bool signature_valid(std::string_view signed_part, std::string_view jose_signature) const;

    MockApnsTokenAuth config_;
    std::unique_ptr<EVP_PKEY, EvpPkeyFree> key_;
    std::string current_token_; // the token in use: the last one accepted as new
    std::int64_t current_issued_at_ = 0;
    std::int64_t newest_issued_at_ = 0;
    std::optional<std::int64_t> expired_up_to_;
};

} // namespace xaps::test
