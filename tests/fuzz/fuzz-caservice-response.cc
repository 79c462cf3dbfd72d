// Fuzz target for the answer of Apple's legacy certificate service
// (provisioning/caservice-messages): a property list, XML or binary, that
// arrives over HTTPS and is parsed by `doveadm xaps provision`, which runs as root.
//
// The input is the HTTP body. Invariants: only Error(invalid_input) is
// thrown; parsing is deterministic; the admin's one-line description of an
// error is printable ASCII and bounded whatever Apple's words were; and the
// request builder, fed the same bytes as Apple ID and host name, writes a
// plist that libplist reads back.
#include "fuzz-invariant.h"

#include "caservice-messages.h"
#include "xaps-error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

namespace caservice = xaps::caservice;

bool printable_ascii(std::string_view text) {
    for (char c : text) {
        if (c < 0x20 || c > 0x7e) {
            return false;
        }
    }
    return true;
}

bool same(const caservice::CertResponse &a, const caservice::CertResponse &b) {
    if (a.error_code != b.error_code || a.error_message != b.error_message ||
        a.error_description != b.error_description ||
        a.certificates.size() != b.certificates.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.certificates.size(); i++) {
        const auto &x = a.certificates[i];
        const auto &y = b.certificates[i];
        if (x.request_no != y.request_no || x.service_type != y.service_type ||
            x.certificate_pem != y.certificate_pem) {
            return false;
        }
    }
    return true;
}

void check_response(std::string_view body) {
    try {
        const caservice::CertResponse response = caservice::parse_response(body);
        XAPS_FUZZ_CHECK(same(response, caservice::parse_response(body)));
        const std::string description = caservice::describe_service_error(response);
        XAPS_FUZZ_CHECK(printable_ascii(description));
        // Apple's two texts are cut at 200 characters each; the rest is ours.
        XAPS_FUZZ_CHECK(description.size() <= 900);
    } catch (const xaps::Error &error) {
        XAPS_FUZZ_CHECK(error.kind() == xaps::ErrorKind::invalid_input);
    }
}

void check_request(std::string_view text) {
    caservice::CertRequest request;
    request.apple_id = std::string(text);
    request.password_hash = std::string(64, 'a');
    request.hostname = std::string(text.substr(0, 64));
    request.entries.push_back(
        {&caservice::mail_service(), "-----BEGIN CERTIFICATE REQUEST-----", {}});
    const std::string plist = caservice::build_request_plist(request);
    XAPS_FUZZ_CHECK(plist.find("<plist") != std::string::npos);
    XAPS_FUZZ_CHECK(plist.find("Service_Mail") != std::string::npos);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    check_response(input);
    // libplist writes only text without NUL bytes.
    if (input.find('\0') == std::string_view::npos && input.size() < 4096) {
        check_request(input);
    }
    return 0;
}
