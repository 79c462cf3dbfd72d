// The TLS side of talking to APNs: the client certificate and key, the trust
// anchors for Apple's server, and the topic the certificate is issued for.
// Loaded while the worker still runs as root (the credentials are readable by
// root only), before the first connection.
#pragma once

#include "apns-settings.h"

#include <chrono>
#include <memory>
#include <string>

#include <openssl/ssl.h>

namespace xaps {

class TlsContext {
public:
    // Throws xaps::Error(ErrorKind::config) naming the file and the problem:
    // unreadable, unparsable, encrypted key, key not matching the certificate,
    // certificate expired or not yet valid, no UID (topic) in its subject.
    static TlsContext load(const ApnsSettings &settings);

    TlsContext(TlsContext &&) noexcept = default;
    TlsContext &operator=(TlsContext &&) noexcept = default;

    // The UID attribute (OID 0.9.2342.19200300.100.1.1) of the certificate's
    // subject: the apns-topic, e.g. com.apple.mail.XServer.<uuid>. Any length.
    const std::string &topic() const noexcept { return topic_; }
    std::chrono::system_clock::time_point certificate_expiry() const noexcept { return expiry_; }
    // TLS 1.2+, ALPN h2, peer verification on; hostname checks are per connection.
    SSL_CTX *native() const noexcept { return ctx_.get(); }

private:
    struct SslCtxFree {
        void operator()(SSL_CTX *ctx) const noexcept { SSL_CTX_free(ctx); }
    };
    TlsContext() = default;

    std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
    std::string topic_;
    std::chrono::system_clock::time_point expiry_;
};

} // namespace xaps
