// Legacy APNs certificate provisioning with an Apple ID, as the Go xapsd did
// it (and macOS Server before it): `doveadm xaps provision` asks Apple's
// self-service certificate service for a push certificate, keeps it with its
// key under xaps_db_path, and renews it when it expires within 30 days. The
// worker only loads the PEM files it leaves there.
//
// Apple stopped issuing certificates through this service in late 2024
// (every request is answered with error -80010). It stays here, off unless
// xaps_apple_id is set, for admins with a service of their own at
// xaps_caservice_url, and it is tested against tests/mock-caservice.
//
// The exchange is one synchronous HTTPS request, bounded by
// CaServiceSettings::timeout, made by the admin's command (or a timer) as
// root. It is never retried in a loop: one attempt per run.
#pragma once

#include "apns-settings.h"
#include "caservice-crypto.h"
#include "xaps-settings.h"

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace xaps {

struct CaServiceSettings {
    std::string apple_id;
    std::string password_hash; // SHA-256 hex of the Apple ID password (`xapsd -pass`)
    // The service's base URL; "/new" and "/renew" are appended as macOS
    // Server did. Empty: Apple's, https://identity.apple.com/pushcert/caservice.
    std::string url;
    std::string vendor_key_file;
    std::string vendor_chain_file;
    std::string ca_file; // trust anchors for the service's TLS; empty: the system store
    std::chrono::milliseconds timeout{std::chrono::seconds{30}};
    std::size_t max_response_bytes = 1024 * 1024;
    std::chrono::seconds renew_before{std::chrono::hours{24 * 30}};
    // Renew a stored certificate that is not yet due (`provision --force`).
    bool renew_now = false;
    std::string hostname; // shown on Apple's certificate portal; empty: gethostname()
    // Makes each new RSA-2048 key; empty: generate one. Tests hand out keys
    // made once, so that each provisioning does not cost five key generations.
    std::function<caservice::EvpPkeyPtr()> generate_key;
};

inline constexpr std::string_view apple_caservice_url =
    "https://identity.apple.com/pushcert/caservice";

// From the xaps_apple_id, xaps_apple_password_hash and xaps_caservice_*
// settings; the rest keep their defaults.
CaServiceSettings caservice_settings_from(const XapsSettings &settings);

struct ProvisionedCertificate {
    enum class Origin {
        reused,                    // the stored certificate is valid beyond renew_before
        issued,                    // none was stored: new keys, new certificates
        renewed,                   // it expired within renew_before and was renewed
        kept_after_failed_renewal, // renewal failed, the stored one is still valid
    };
    // PEM files for ApnsSettings::cert_file and ::key_file (mode 0600).
    std::string cert_file;
    std::string key_file;
    std::chrono::system_clock::time_point not_after;
    // When the next provisioning should renew it (not_after - renew_before).
    std::chrono::system_clock::time_point renew_at;
    Origin origin = Origin::reused;
    std::string renewal_problem; // why, with kept_after_failed_renewal
};

// Reuses the mail push certificate stored under state_dir (xaps_db_path),
// or requests one, or renews it when it expires within renew_before of now
// (or at once with renew_now).
// Blocks for at most settings.timeout when it asks Apple. log gets what an
// admin should see (requests made, renewal failures); may be empty.
// Throws Error(config) for settings, vendor files, state files and answers
// that only the admin can fix (-80010: the service is gone; -80004: wrong
// Apple ID or password), Error(unavailable) when the service could not be
// reached or answered with another error, Error(invalid_input) when its
// answer is malformed or too large. A stored certificate that is still valid
// is returned rather than any error from its renewal.
ProvisionedCertificate provision_or_reuse(const CaServiceSettings &settings,
                                          const std::string &state_dir,
                                          std::chrono::system_clock::time_point now,
                                          const LogSink &log = {});

} // namespace xaps
