// The TLS side of talking to APNs: the client certificate and key (none with
// token auth, see provider-token.h), the trust anchors for Apple's server,
// and the topic pushes go to. Loaded while the worker still runs as root (the
// credentials are readable by root only), before the first connection.
#pragma once

#include "apns-settings.h"
#include "openssl-handles.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <openssl/ssl.h>

namespace xaps {

class TlsContext {
public:
    // With settings.cert_file or p12_file: the client certificate. Without
    // either but with settings.token_key_file: no client certificate, the
    // topic from settings.topic (the token itself is ProviderToken's).
    // Throws xaps::Error(ErrorKind::config) naming the file and the problem:
    // unreadable, unparsable, encrypted key, wrong PKCS#12 password, key not
    // matching the certificate, certificate expired or not yet valid, no UID
    // (topic) in its subject; with token auth, no xaps_apns_topic.
    static TlsContext load(const ApnsSettings &settings);

    TlsContext(TlsContext &&) noexcept = default;
    TlsContext &operator=(TlsContext &&) noexcept = default;

    // The UID attribute (OID 0.9.2342.19200300.100.1.1) of the certificate's
    // subject: the apns-topic, e.g. com.apple.mail.XServer.<uuid>. Any length.
    // With token auth: settings.topic.
    const std::string &topic() const noexcept { return topic_; }
    bool has_client_certificate() const noexcept { return expiry_.has_value(); }
    // The client certificate's notAfter; nullopt with token auth.
    std::optional<std::chrono::system_clock::time_point> certificate_expiry() const noexcept {
        return expiry_;
    }
    // TLS 1.2+, ALPN h2, peer verification on; hostname checks are per connection.
    SSL_CTX *native() const noexcept { return ctx_.get(); }

private:
    TlsContext() = default;

    openssl::SslCtxPtr ctx_;
    std::string topic_;
    std::optional<std::chrono::system_clock::time_point> expiry_;
};

} // namespace xaps
