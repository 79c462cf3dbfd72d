#include "caservice-messages.h"

#include "xaps-error.h"

#include <cstdlib>
#include <limits>
#include <memory>
#include <type_traits>

#include <plist/plist.h>

namespace xaps::caservice {
namespace {

struct PlistFree {
    void operator()(void *node) const noexcept { plist_free(static_cast<plist_t>(node)); }
};
// Owns a root node; nodes inserted into a dict or array belong to it.
using PlistPtr = std::unique_ptr<std::remove_pointer_t<plist_t>, PlistFree>;

// libplist allocates its output with malloc(); its function to free it was
// renamed (plist_to_xml_free in 2.2, Debian 12; plist_mem_free in 2.6, Debian 13).
struct XmlFree {
    void operator()(char *xml) const noexcept { std::free(xml); }
};

// Apple never answered anything near this; the HTTP client bounds it already.
constexpr std::size_t max_response_size = std::numeric_limits<std::uint32_t>::max() / 2;
constexpr std::size_t max_error_text = 200;

plist_t new_string(std::string_view value) {
    return plist_new_string(std::string(value).c_str());
}

void set(plist_t dict, const char *key, plist_t value) {
    plist_dict_set_item(dict, key, value);
}

std::string to_xml(plist_t root) {
    char *xml = nullptr;
    std::uint32_t length = 0;
    plist_to_xml(root, &xml, &length);
    std::unique_ptr<char, XmlFree> owned(xml);
    if (!owned) {
        throw Error(ErrorKind::internal, "libplist could not write a property list");
    }
    return std::string(owned.get(), length);
}

plist_t new_data(std::string_view bytes) {
    return plist_new_data(bytes.data(), bytes.size());
}

plist_t child(plist_t dict, const char *key, plist_type type) {
    if (dict == nullptr || plist_get_node_type(dict) != PLIST_DICT) {
        return nullptr;
    }
    plist_t node = plist_dict_get_item(dict, key);
    return node != nullptr && plist_get_node_type(node) == type ? node : nullptr;
}

std::string string_value(plist_t node) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_STRING) {
        return {};
    }
    std::uint64_t length = 0;
    const char *value = plist_get_string_ptr(node, &length);
    return value == nullptr ? std::string() : std::string(value, length);
}

// libplist 2.2 keeps <integer> as 64 bits; negative values come back as
// their two's complement, which is what Apple's error codes are.
std::int64_t integer_value(plist_t node, std::int64_t fallback) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_UINT) {
        return fallback;
    }
    std::uint64_t value = 0;
    plist_get_uint_val(node, &value);
    return static_cast<std::int64_t>(value);
}

std::string printable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, max_error_text)) {
        out += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    if (text.size() > max_error_text) {
        out += "...";
    }
    return out;
}

} // namespace

const std::vector<ServiceSpec> &macos_server_services() {
    static const std::vector<ServiceSpec> services{
        {"calendar", "Service_Calendar", "com.apple.servermgrd.apns.calendar",
         "apns:com.apple.calendar", 0},
        {"contact", "Service_Contact", "com.apple.servermgrd.apns.contact",
         "apns:com.apple.contact", 1},
        {"mail", "Service_Mail", "com.apple.servermgrd.apns.mail", "apns:com.apple.mail", 2},
        {"mgmt", "Service_Mgmt", "com.apple.servermgrd.apns.mgmt", "apns:com.apple.mgmt", 3},
        {"alerts", "Service_Alerts", "com.apple.server.apns.alerts", "apns:com.apple.alerts", 4},
    };
    return services;
}

const ServiceSpec &mail_service() {
    return macos_server_services()[2];
}

std::string build_request_plist(const CertRequest &request) {
    for (const CertRequestEntry &entry : request.entries) {
        if (entry.service == nullptr) {
            throw Error(ErrorKind::internal, "certificate request entry without a service");
        }
    }
    PlistPtr root(plist_new_dict());

    plist_t header = plist_new_dict();
    set(header, "ClientApplicationCredential", new_string("1"));
    set(header, "ClientApplicationName", new_string("XServer"));
    set(header, "ClientIPAddress", new_string("1"));
    set(header, "ClientOSName", new_string("MAC OSX"));
    set(header, "ClientOSVersion", new_string("2.1"));
    set(header, "LanguagePreference", new_string("1"));
    set(header, "TransactionId", new_string("1"));
    set(header, "Version", new_string("1"));
    set(root.get(), "Header", header);

    plist_t body = plist_new_dict();
    plist_t list = plist_new_array();
    for (const CertRequestEntry &entry : request.entries) {
        plist_t item = plist_new_dict();
        set(item, "CSR", new_string(entry.csr_pem));
        set(item, "CertRequestNo",
            plist_new_uint(static_cast<std::uint64_t>(entry.service->request_no)));
        if (!entry.renew_serial_hex.empty()) {
            set(item, "CertificateSerialNumber", new_string(entry.renew_serial_hex));
        }
        set(item, "Description",
            new_string(request.hostname + " - " + std::string(entry.service->description)));
        set(item, "ServiceType", new_string(entry.service->service_type));
        plist_array_append_item(list, item);
    }
    set(body, "CertRequestList", list);
    set(body, "ProfileType", new_string("Production"));
    set(body, "RequesterType", new_string("XServer"));
    plist_t user = plist_new_dict();
    set(user, "AccountName", new_string(request.apple_id));
    set(user, "PasswordHash", new_string(request.password_hash));
    set(body, "User", user);
    set(root.get(), "Request", body);

    return to_xml(root.get());
}

std::string build_signed_body(const std::string &request_plist, const VendorCredential &vendor) {
    PlistPtr root(plist_new_dict());
    set(root.get(), "PushCertCertificateChain", new_data(vendor.chain_der));
    set(root.get(), "PushCertRequestPlist", new_data(request_plist));
    set(root.get(), "PushCertSignature", new_data(sign_sha1(vendor.key.get(), request_plist)));
    set(root.get(), "PushCertSignedRequest", plist_new_bool(1));
    return to_xml(root.get());
}

CertResponse parse_response(std::string_view body) {
    if (body.empty() || body.size() > max_response_size) {
        throw Error(ErrorKind::invalid_input, "certificate service answer: empty or too large");
    }
    plist_t parsed = nullptr;
    // Apple answers XML; the binary form is taken too. (Not plist_from_memory:
    // its signature differs between libplist 2.2 and 2.6.)
    const auto size = static_cast<std::uint32_t>(body.size());
    if (plist_is_binary(body.data(), size) != 0) {
        plist_from_bin(body.data(), size, &parsed);
    } else {
        plist_from_xml(body.data(), size, &parsed);
    }
    PlistPtr root(parsed);
    plist_t response = child(root.get(), "Response", PLIST_DICT);
    plist_t status = child(response, "Status", PLIST_DICT);
    if (status == nullptr) {
        throw Error(ErrorKind::invalid_input,
                    "certificate service answer: not a property list with Response/Status");
    }
    CertResponse result;
    result.error_code = integer_value(child(status, "ErrorCode", PLIST_UINT), 0);
    result.error_message = string_value(child(status, "ErrorMessage", PLIST_STRING));
    result.error_description = string_value(child(status, "ErrorDescription", PLIST_STRING));
    if (plist_t list = child(response, "Certificates", PLIST_ARRAY)) {
        for (std::uint32_t i = 0; i < plist_array_get_size(list); ++i) {
            plist_t item = plist_array_get_item(list, i);
            IssuedCertificate issued;
            issued.request_no = integer_value(child(item, "CertRequestNo", PLIST_UINT), -1);
            issued.service_type = string_value(child(item, "ServiceType", PLIST_STRING));
            issued.certificate_pem = string_value(child(item, "Certificate", PLIST_STRING));
            result.certificates.push_back(std::move(issued));
        }
    }
    return result;
}

std::string describe_service_error(const CertResponse &response) {
    std::string apple_words = printable(response.error_message);
    if (!response.error_description.empty()) {
        apple_words += (apple_words.empty() ? "" : " ") + std::string("(") +
                       printable(response.error_description) + ")";
    }
    std::string code = std::to_string(response.error_code);
    std::string said = "Apple's certificate service answered error " + code +
                       (apple_words.empty() ? "" : ": " + apple_words);
    switch (response.error_code) {
    case error_service_discontinued:
        return said + ". Apple no longer issues certificates through this service (it stopped "
                      "in late 2024): configure xaps_apns_cert_file/xaps_apns_key_file with an "
                      "existing certificate, or token authentication (xaps_apns_token_key_file)";
    case error_bad_credentials:
        return said + ". The Apple ID or password was rejected: check xaps_apple_id and "
                      "xaps_apple_password_hash (the SHA-256 hex of the password, as `doveadm "
                      "xaps hash-password` prints it)";
    default:
        return said;
    }
}

} // namespace xaps::caservice
