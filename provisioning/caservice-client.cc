#include "caservice-client.h"

#include "caservice-messages.h"
#include "caservice-state.h"
#include "https-post.h"
#include "utc-time.h"
#include "xaps-error.h"

#include <algorithm>
#include <cctype>

#include <unistd.h>

namespace xaps {
namespace {

using caservice::CertRequest;
using caservice::CertRequestEntry;
using caservice::EvpPkeyPtr;
using caservice::ServiceSpec;
using caservice::StateDirectory;
using caservice::X509Ptr;

// What macOS Server's servermgrd sent; Apple's service looked at it.
constexpr const char *user_agent =
    "Servermgrd%20Plugin/6.0 CFNetwork/811.11 Darwin/16.7.0 (x86_64)";
constexpr std::size_t max_http_error_excerpt = 200;

void log_line(const LogSink &log, LogLevel level, const std::string &message) {
    if (log) {
        log(level, message);
    }
}

std::string printable_excerpt(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, max_http_error_excerpt)) {
        out += (c >= 0x20 && c < 0x7f) ? c : ' ';
    }
    return out;
}

// Checks what can be checked without the network; returns the hash as
// xapsd printed it (lower-case hex).
std::string validated_password_hash(const CaServiceSettings &settings) {
    if (settings.apple_id.empty()) {
        throw Error(ErrorKind::config, "xaps_apple_id: must be set to use Apple's certificate "
                                       "service");
    }
    std::string hash = settings.password_hash;
    std::transform(hash.begin(), hash.end(), hash.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    bool hex = hash.size() == 64 && std::all_of(hash.begin(), hash.end(), [](unsigned char c) {
                   return std::isxdigit(c) != 0;
               });
    if (!hex) {
        throw Error(ErrorKind::config,
                    "xaps_apple_password_hash: must be the 64 hex digits of the SHA-256 of the "
                    "Apple ID password, as `doveadm xaps hash-password` (or `xapsd -pass`) "
                    "prints it");
    }
    return hash;
}

std::string base_url(const CaServiceSettings &settings) {
    std::string url = settings.url.empty() ? std::string(apple_caservice_url) : settings.url;
    while (!url.empty() && url.back() == '/') {
        url.pop_back();
    }
    if (url.rfind("https://", 0) != 0) {
        throw Error(ErrorKind::config, "xaps_caservice_url " + url + ": must be an https:// URL");
    }
    return url;
}

std::string host_name(const CaServiceSettings &settings) {
    if (!settings.hostname.empty()) {
        return settings.hostname;
    }
    char name[256] = {};
    if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') {
        return "localhost";
    }
    return name;
}

ErrorKind kind_of_service_error(std::int64_t code) {
    switch (code) {
    case caservice::error_service_discontinued:
    case caservice::error_bad_credentials:
        return ErrorKind::config; // retrying cannot help, only the admin can
    default:
        return ErrorKind::unavailable;
    }
}

class Exchange {
public:
    Exchange(const CaServiceSettings &settings, std::string password_hash, std::string url,
             caservice::VendorCredential vendor)
        : settings_(settings), password_hash_(std::move(password_hash)), url_(std::move(url)),
          vendor_(std::move(vendor)) {}

    const std::string &url() const noexcept { return url_; }

    // Asks for one certificate per entry at url/<action>; the answer must
    // carry each one, for its entry's key. Blocks up to settings.timeout.
    std::vector<X509Ptr> request(const std::string &action,
                                 const std::vector<CertRequestEntry> &entries,
                                 const std::vector<EVP_PKEY *> &keys) const {
        CertRequest request;
        request.apple_id = settings_.apple_id;
        request.password_hash = password_hash_;
        request.hostname = host_name(settings_);
        request.entries = entries;
        std::string request_plist = caservice::build_request_plist(request);

        HttpsPostRequest post;
        post.url = url_ + "/" + action;
        post.body = caservice::build_signed_body(request_plist, vendor_);
        post.headers = {"Content-Type: text/x-xml-plist", std::string("User-Agent: ") + user_agent,
                        "Accept: */*", "Accept-Language: en-us"};
        post.ca_file = settings_.ca_file;
        post.timeout = settings_.timeout;
        post.max_response_bytes = settings_.max_response_bytes;
        HttpsPostResponse answer = https_post(post);
        if (answer.status != 200) {
            throw Error(ErrorKind::unavailable, post.url + ": HTTP status " +
                                                    std::to_string(answer.status) + ": " +
                                                    printable_excerpt(answer.body));
        }
        caservice::CertResponse response = caservice::parse_response(answer.body);
        if (response.error_code != 0) {
            throw Error(kind_of_service_error(response.error_code),
                        caservice::describe_service_error(response));
        }

        std::vector<X509Ptr> certificates;
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const ServiceSpec &service = *entries[i].service;
            auto issued = std::find_if(response.certificates.begin(), response.certificates.end(),
                                       [&](const caservice::IssuedCertificate &c) {
                                           return c.request_no == service.request_no;
                                       });
            if (issued == response.certificates.end()) {
                throw Error(ErrorKind::invalid_input, post.url +
                                                          ": the answer has no certificate for " +
                                                          std::string(service.service_type));
            }
            X509Ptr certificate = caservice::certificate_from_pem(issued->certificate_pem);
            if (!certificate) {
                throw Error(ErrorKind::invalid_input, post.url + ": the certificate for " +
                                                          std::string(service.service_type) +
                                                          " is not PEM");
            }
            if (!caservice::certificate_matches_key(certificate.get(), keys[i])) {
                throw Error(ErrorKind::invalid_input,
                            post.url + ": the certificate for " +
                                std::string(service.service_type) +
                                " is not for the key it was requested with");
            }
            certificates.push_back(std::move(certificate));
        }
        return certificates;
    }

private:
    const CaServiceSettings &settings_;
    std::string password_hash_;
    std::string url_;
    caservice::VendorCredential vendor_;
};

EvpPkeyPtr new_key(const CaServiceSettings &settings) {
    EvpPkeyPtr key =
        settings.generate_key ? settings.generate_key() : caservice::generate_rsa_key();
    if (!key) {
        throw Error(ErrorKind::internal, "no key to request a certificate for");
    }
    return key;
}

ProvisionedCertificate result_for(const StateDirectory &state, X509 *mail_certificate,
                                  const CaServiceSettings &settings,
                                  ProvisionedCertificate::Origin origin) {
    ProvisionedCertificate result;
    result.cert_file = state.certificate_path(caservice::mail_service());
    result.key_file = state.key_path(caservice::mail_service());
    result.not_after = caservice::not_after(mail_certificate);
    result.renew_at = result.not_after - settings.renew_before;
    result.origin = origin;
    return result;
}

ProvisionedCertificate issue_new(const CaServiceSettings &settings, const StateDirectory &state,
                                 const Exchange &exchange, const LogSink &log) {
    const auto &services = caservice::macos_server_services();
    std::vector<EvpPkeyPtr> keys;
    std::vector<EVP_PKEY *> key_pointers;
    std::vector<CertRequestEntry> entries;
    for (const ServiceSpec &service : services) {
        keys.push_back(new_key(settings));
        key_pointers.push_back(keys.back().get());
        entries.push_back(
            {&service, caservice::make_csr_pem(keys.back().get(), service.csr_common_name), {}});
    }
    log_line(log, LogLevel::info,
             "requesting push certificates for Apple ID " + settings.apple_id + " from " +
                 exchange.url() + "/new");
    std::vector<X509Ptr> certificates = exchange.request("new", entries, key_pointers);
    // Keys first: a crash in between leaves keys without certificates, which
    // load() treats as nothing stored.
    for (std::size_t i = 0; i < services.size(); ++i) {
        state.write_key(services[i], keys[i].get());
    }
    for (std::size_t i = 0; i < services.size(); ++i) {
        state.write_certificate(services[i], certificates[i].get());
    }
    X509 *mail = certificates[static_cast<std::size_t>(caservice::mail_service().request_no)].get();
    ProvisionedCertificate result =
        result_for(state, mail, settings, ProvisionedCertificate::Origin::issued);
    log_line(log, LogLevel::info,
             "Apple's certificate service issued the push certificate, valid until " +
                 iso8601_utc(result.not_after));
    return result;
}

ProvisionedCertificate renew(const CaServiceSettings &settings, const StateDirectory &state,
                             const Exchange &exchange,
                             const std::vector<caservice::StoredCredential> &stored,
                             const LogSink &log) {
    const auto &services = caservice::macos_server_services();
    std::vector<EVP_PKEY *> key_pointers;
    std::vector<CertRequestEntry> entries;
    // Same keys, and the serial of the certificate each request renews, as xapsd did.
    for (std::size_t i = 0; i < services.size(); ++i) {
        key_pointers.push_back(stored[i].key.get());
        entries.push_back(
            {&services[i],
             caservice::make_csr_pem(stored[i].key.get(), services[i].csr_common_name),
             caservice::serial_hex(stored[i].certificate.get())});
    }
    std::vector<X509Ptr> certificates = exchange.request("renew", entries, key_pointers);
    for (std::size_t i = 0; i < services.size(); ++i) {
        state.write_certificate(services[i], certificates[i].get());
    }
    X509 *mail = certificates[static_cast<std::size_t>(caservice::mail_service().request_no)].get();
    ProvisionedCertificate result =
        result_for(state, mail, settings, ProvisionedCertificate::Origin::renewed);
    log_line(log, LogLevel::info,
             "Apple's certificate service renewed the push certificate, valid until " +
                 iso8601_utc(result.not_after));
    return result;
}

} // namespace

CaServiceSettings caservice_settings_from(const XapsSettings &settings) {
    CaServiceSettings caservice;
    caservice.apple_id = settings.apple_id;
    caservice.password_hash = settings.apple_password_hash;
    caservice.url = settings.caservice_url;
    caservice.vendor_key_file = settings.caservice_vendor_key_file;
    caservice.vendor_chain_file = settings.caservice_vendor_chain_file;
    return caservice;
}

ProvisionedCertificate provision_or_reuse(const CaServiceSettings &settings,
                                          const std::string &state_dir,
                                          std::chrono::system_clock::time_point now,
                                          const LogSink &log) {
    std::string password_hash = validated_password_hash(settings);
    std::string url = base_url(settings);
    // Loaded even when nothing is requested, so a broken vendor file shows
    // on the first daily run rather than 30 days before the certificate expires.
    Exchange exchange(
        settings, std::move(password_hash), std::move(url),
        caservice::load_vendor_credential(settings.vendor_key_file, settings.vendor_chain_file));
    StateDirectory state(state_dir);

    std::string problem;
    auto stored = state.load(caservice::macos_server_services(), problem);
    if (!stored) {
        if (!problem.empty()) {
            log_line(log, LogLevel::warning,
                     "stored push certificates unusable (" + problem + "): requesting new ones");
        }
        return issue_new(settings, state, exchange, log);
    }

    const auto mail_index = static_cast<std::size_t>(caservice::mail_service().request_no);
    X509 *mail = (*stored)[mail_index].certificate.get();
    ProvisionedCertificate current =
        result_for(state, mail, settings, ProvisionedCertificate::Origin::reused);
    if (now < current.renew_at && !settings.renew_now) {
        return current;
    }
    log_line(log, LogLevel::info,
             "push certificate expires " + iso8601_utc(current.not_after) + ": renewing at " +
                 exchange.url() + "/renew");
    try {
        return renew(settings, state, exchange, *stored, log);
    } catch (const Error &e) {
        if (now >= current.not_after) {
            throw Error(e.kind(),
                        "renewing the expired push certificate: " + std::string(e.what()));
        }
        current.origin = ProvisionedCertificate::Origin::kept_after_failed_renewal;
        current.renewal_problem = e.what();
        log_line(log, LogLevel::warning,
                 "renewing the push certificate failed, keeping the current one until " +
                     iso8601_utc(current.not_after) + ": " + e.what());
        return current;
    }
}

} // namespace xaps
