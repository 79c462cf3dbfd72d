// The plists of Apple's legacy certificate service: what we send, checked
// field by field with libplist, and Apple's answers as users recorded them.
#include "caservice-messages.h"

#include "caservice-crypto.h"
#include "caservice-test-keys.h"
#include "xaps-error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <plist/plist.h>

namespace xaps::caservice {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct PlistFree {
    void operator()(void *node) const noexcept { plist_free(static_cast<plist_t>(node)); }
};
using Plist = std::unique_ptr<void, PlistFree>;

Plist parse(const std::string &xml) {
    plist_t root = nullptr;
    plist_from_xml(xml.data(), static_cast<std::uint32_t>(xml.size()), &root);
    return Plist(root);
}

std::string text(plist_t node) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_STRING) {
        return "<not a string>";
    }
    char *value = nullptr;
    plist_get_string_val(node, &value);
    std::string out(value);
    free(value);
    return out;
}

std::string data(plist_t node) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_DATA) {
        return "<not data>";
    }
    std::uint64_t length = 0;
    const char *value = plist_get_data_ptr(node, &length);
    return std::string(value, length);
}

std::vector<std::string> keys_of(plist_t dict) {
    std::vector<std::string> keys;
    plist_dict_iter it = nullptr;
    plist_dict_new_iter(dict, &it);
    for (;;) {
        char *key = nullptr;
        plist_t value = nullptr;
        plist_dict_next_item(dict, it, &key, &value);
        if (key == nullptr) {
            break;
        }
        keys.emplace_back(key);
        free(key);
    }
    free(it);
    return keys;
}

// Apple's answer after it stopped issuing, as posted in
// freswa/dovecot-xaps-daemon issue #43 (December 2024).
const std::string discontinued_answer = R"(<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Response</key>
    <dict>
        <key>Status</key>
        <dict>
            <key>ErrorDescription</key>
            <string></string>
            <key>ErrorMessage</key>
            <string>ServiceType is Invalid.</string>
            <key>ErrorCode</key>
            <integer>-80010</integer>
        </dict>
    </dict>
    <key>Header</key>
    <dict>
        <key>ClientIPAddress</key>
        <string>1</string>
        <key>TransactionId</key>
        <string>1</string>
        <key>ClientApplicationName</key>
        <string>XServer</string>
    </dict>
</dict>
</plist>
)";

std::string answer_with_status(const std::string &status, const std::string &certificates = "") {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
           "<key>Response</key><dict><key>Status</key><dict>" +
           status + "</dict>" + certificates + "</dict></dict></plist>";
}

TEST(CaServiceMessages, ParsesAppleAnswers) {
    const std::string issued_certificates =
        "<key>Certificates</key><array>"
        "<dict><key>Certificate</key><string>-----BEGIN CERTIFICATE-----\nAAAA\n"
        "-----END CERTIFICATE-----\n</string><key>CertRequestNo</key><integer>2</integer>"
        "<key>Description</key><string>host - apns:com.apple.mail</string>"
        "<key>ServiceType</key><string>Service_Mail</string></dict>"
        "<dict><key>CertRequestNo</key><integer>0</integer>"
        "<key>ServiceType</key><string>Service_Calendar</string></dict></array>";
    const struct {
        const char *name;
        std::string body;
        std::int64_t code;
        std::string message;
        std::string description;
        std::size_t certificates;
    } rows[] = {
        {"discontinued (issue #43)", discontinued_answer, -80010, "ServiceType is Invalid.", "", 0},
        // As posted in scintill/macos-server-apns-certs issue #5.
        {"bad credentials",
         answer_with_status("<key>ErrorDescription</key><string>Invalid account name and "
                            "password. Please verify the account name - password</string>"
                            "<key>ErrorMessage</key><string>Account Name - Password "
                            "invalid.</string><key>ErrorCode</key><integer>-80004</integer>"),
         -80004, "Account Name - Password invalid.",
         "Invalid account name and password. Please verify the account name - password", 0},
        {"issued",
         answer_with_status("<key>ErrorCode</key><integer>0</integer>", issued_certificates), 0, "",
         "", 2},
        {"status without a code", answer_with_status(""), 0, "", "", 0},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        CertResponse response = parse_response(row.body);
        EXPECT_EQ(response.error_code, row.code);
        EXPECT_EQ(response.error_message, row.message);
        EXPECT_EQ(response.error_description, row.description);
        ASSERT_EQ(response.certificates.size(), row.certificates);
    }
    CertResponse issued = parse_response(
        answer_with_status("<key>ErrorCode</key><integer>0</integer>", issued_certificates));
    EXPECT_EQ(issued.certificates[0].request_no, 2);
    EXPECT_EQ(issued.certificates[0].service_type, "Service_Mail");
    EXPECT_THAT(issued.certificates[0].certificate_pem, HasSubstr("BEGIN CERTIFICATE"));
    EXPECT_EQ(issued.certificates[1].request_no, 0);
    EXPECT_EQ(issued.certificates[1].certificate_pem, "");
}

TEST(CaServiceMessages, MalformedAnswersAreInvalidInput) {
    const struct {
        const char *name;
        std::string body;
    } rows[] = {
        {"empty", ""},
        {"html", "<html><head><title>502 Bad Gateway</title></head></html>"},
        {"plist without Response", "<plist version=\"1.0\"><dict><key>Header</key><dict/></dict>"
                                   "</plist>"},
        {"Response without Status", "<plist version=\"1.0\"><dict><key>Response</key><dict/>"
                                    "</dict></plist>"},
        {"Status not a dict", "<plist version=\"1.0\"><dict><key>Response</key><dict>"
                              "<key>Status</key><string>ok</string></dict></dict></plist>"},
        {"an array", "<plist version=\"1.0\"><array/></plist>"},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        try {
            parse_response(row.body);
            FAIL() << "expected invalid_input";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
        }
    }
}

TEST(CaServiceMessages, ErrorDescriptionsSayWhatToDo) {
    const struct {
        const char *name;
        CertResponse response;
        std::vector<std::string> parts;
    } rows[] = {
        {"discontinued",
         {-80010, "ServiceType is Invalid.", "", {}},
         {"error -80010", "ServiceType is Invalid.",
          "Apple no longer issues certificates through this service", "xaps_apns_cert_file"}},
        {"bad credentials",
         {-80004, "Account Name - Password invalid.", "Invalid account name", {}},
         {"error -80004", "(Invalid account name)", "xaps_apple_id", "xaps_apple_password_hash"}},
        {"other",
         {-20358, "Invalid Session", "Exception from DS", {}},
         {"error -20358: Invalid Session (Exception from DS)"}},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        std::string description = describe_service_error(row.response);
        for (const std::string &part : row.parts) {
            EXPECT_THAT(description, HasSubstr(part));
        }
    }
}

TEST(CaServiceMessages, ErrorTextFromTheNetworkIsMadePrintableAndBounded) {
    CertResponse response{-1, "line\nbreak\x1b[31m" + std::string(1000, 'x'), "", {}};
    std::string description = describe_service_error(response);
    EXPECT_THAT(description, Not(HasSubstr("\n")));
    EXPECT_THAT(description, Not(HasSubstr("\x1b")));
    EXPECT_LT(description.size(), 400u);
}

TEST(CaServiceMessages, ServicesAreMacOsServersFive) {
    const auto &services = macos_server_services();
    ASSERT_EQ(services.size(), 5u);
    for (std::size_t i = 0; i < services.size(); ++i) {
        EXPECT_EQ(services[i].request_no, static_cast<int>(i));
    }
    EXPECT_EQ(mail_service().service_type, "Service_Mail");
    EXPECT_EQ(mail_service().csr_common_name, "com.apple.servermgrd.apns.mail");
    EXPECT_EQ(services[4].csr_common_name, "com.apple.server.apns.alerts");
}

TEST(CaServiceMessages, RequestPlistHasMacOsServersFields) {
    CertRequest request;
    request.apple_id = "admin@example.com";
    request.password_hash = std::string(64, 'a');
    request.hostname = "mail.example.com";
    request.entries.push_back({&macos_server_services()[0], "CSR-0", ""});
    request.entries.push_back({&mail_service(), "CSR-2", "1f2e"});
    std::string xml = build_request_plist(request);

    EXPECT_EQ(xml.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", 0), 0u);
    Plist root = parse(xml);
    ASSERT_NE(root, nullptr);
    EXPECT_EQ(keys_of(root.get()), (std::vector<std::string>{"Header", "Request"}));
    plist_t header = plist_dict_get_item(root.get(), "Header");
    const std::map<std::string, std::string> header_fields = {
        {"ClientApplicationCredential", "1"},
        {"ClientApplicationName", "XServer"},
        {"ClientIPAddress", "1"},
        {"ClientOSName", "MAC OSX"},
        {"ClientOSVersion", "2.1"},
        {"LanguagePreference", "1"},
        {"TransactionId", "1"},
        {"Version", "1"},
    };
    std::vector<std::string> header_keys;
    for (const auto &[key, value] : header_fields) {
        SCOPED_TRACE(key);
        header_keys.push_back(key);
        EXPECT_EQ(text(plist_dict_get_item(header, key.c_str())), value);
    }
    EXPECT_EQ(keys_of(header), header_keys) << "macOS Server's (alphabetical) order";

    plist_t body = plist_dict_get_item(root.get(), "Request");
    EXPECT_EQ(text(plist_dict_get_item(body, "ProfileType")), "Production");
    EXPECT_EQ(text(plist_dict_get_item(body, "RequesterType")), "XServer");
    plist_t user = plist_dict_get_item(body, "User");
    EXPECT_EQ(text(plist_dict_get_item(user, "AccountName")), "admin@example.com");
    EXPECT_EQ(text(plist_dict_get_item(user, "PasswordHash")), std::string(64, 'a'));
    plist_t list = plist_dict_get_item(body, "CertRequestList");
    ASSERT_EQ(plist_array_get_size(list), 2u);

    plist_t calendar = plist_array_get_item(list, 0);
    EXPECT_EQ(keys_of(calendar),
              (std::vector<std::string>{"CSR", "CertRequestNo", "Description", "ServiceType"}))
        << "no CertificateSerialNumber for a new certificate";
    EXPECT_EQ(text(plist_dict_get_item(calendar, "CSR")), "CSR-0");
    EXPECT_EQ(text(plist_dict_get_item(calendar, "Description")),
              "mail.example.com - apns:com.apple.calendar");
    EXPECT_EQ(text(plist_dict_get_item(calendar, "ServiceType")), "Service_Calendar");

    plist_t mail = plist_array_get_item(list, 1);
    std::uint64_t number = 0;
    plist_get_uint_val(plist_dict_get_item(mail, "CertRequestNo"), &number);
    EXPECT_EQ(number, 2u);
    EXPECT_EQ(text(plist_dict_get_item(mail, "CertificateSerialNumber")), "1f2e");
    EXPECT_EQ(text(plist_dict_get_item(mail, "ServiceType")), "Service_Mail");
}

TEST(CaServiceMessages, SignedBodyCarriesChainRequestAndVerifiableSignature) {
    std::string dir = (fs::temp_directory_path() / "xaps-caservice-msg-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    test::VendorFiles files = test::write_vendor_files(dir);
    VendorCredential vendor = load_vendor_credential(files.key_pem, files.chain_pem);
    fs::remove_all(dir);

    const std::string request_plist = "<?xml version=\"1.0\"?><plist><dict/></plist>\n";
    Plist root = parse(build_signed_body(request_plist, vendor));
    ASSERT_NE(root, nullptr);
    EXPECT_EQ(keys_of(root.get()),
              (std::vector<std::string>{"PushCertCertificateChain", "PushCertRequestPlist",
                                        "PushCertSignature", "PushCertSignedRequest"}));
    EXPECT_EQ(data(plist_dict_get_item(root.get(), "PushCertCertificateChain")), vendor.chain_der);
    EXPECT_EQ(data(plist_dict_get_item(root.get(), "PushCertRequestPlist")), request_plist);
    plist_t signed_flag = plist_dict_get_item(root.get(), "PushCertSignedRequest");
    ASSERT_EQ(plist_get_node_type(signed_flag), PLIST_BOOLEAN);
    std::uint8_t flag = 0;
    plist_get_bool_val(signed_flag, &flag);
    EXPECT_EQ(flag, 1);

    std::string signature = data(plist_dict_get_item(root.get(), "PushCertSignature"));
    EXPECT_EQ(signature.size(), 128u) << "RSA-1024 vendor key";
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> verify(EVP_MD_CTX_new(),
                                                                   EVP_MD_CTX_free);
    ASSERT_EQ(EVP_DigestVerifyInit(verify.get(), nullptr, EVP_sha1(), nullptr, vendor.key.get()),
              1);
    EXPECT_EQ(EVP_DigestVerify(
                  verify.get(), reinterpret_cast<const unsigned char *>(signature.data()),
                  signature.size(), reinterpret_cast<const unsigned char *>(request_plist.data()),
                  request_plist.size()),
              1);
}

} // namespace
} // namespace xaps::caservice
