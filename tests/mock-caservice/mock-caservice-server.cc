#include "mock-caservice-server.h"

#include "xaps-error.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <signal.h>
#include <sstream>
#include <thread>
#include <type_traits>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <plist/plist.h>

namespace xaps::test {
namespace {

constexpr std::size_t max_header_bytes = 64 * 1024;
constexpr std::size_t max_body_bytes = 4 * 1024 * 1024;
constexpr int socket_timeout_seconds = 5;

template <auto Free> struct Deleter {
    template <typename T> void operator()(T *p) const noexcept { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<SSL_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
struct PlistFree {
    void operator()(void *node) const noexcept { plist_free(static_cast<plist_t>(node)); }
};
using PlistPtr = std::unique_ptr<void, PlistFree>;

std::string drain_openssl_errors() {
    std::string message;
    while (unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof(buffer));
        message = buffer;
    }
    return message;
}

[[noreturn]] void fail(const std::string &what) {
    throw Error(ErrorKind::internal, "mock caservice: " + what + ": " + drain_openssl_errors());
}

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw Error(ErrorKind::config, "mock caservice: cannot read " + path);
    }
    std::ostringstream content;
    content << in.rdbuf();
    return content.str();
}

BioPtr memory_bio(std::string_view data) {
    return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// Certificates from PEM, or DER back to back.
std::vector<X509Ptr> parse_certificates(const std::string &content) {
    std::vector<X509Ptr> certs;
    if (content.find("-----BEGIN") != std::string::npos) {
        BioPtr bio = memory_bio(content);
        while (X509 *cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
            certs.emplace_back(cert);
        }
        ERR_clear_error();
        return certs;
    }
    auto *in = reinterpret_cast<const unsigned char *>(content.data());
    const auto *end = in + content.size();
    while (in < end) {
        X509 *cert = d2i_X509(nullptr, &in, end - in);
        if (cert == nullptr) {
            ERR_clear_error();
            return {};
        }
        certs.emplace_back(cert);
    }
    return certs;
}

std::string der_of(X509 *cert) {
    int size = i2d_X509(cert, nullptr);
    std::string der(static_cast<std::size_t>(std::max(size, 0)), '\0');
    auto *out = reinterpret_cast<unsigned char *>(der.data());
    i2d_X509(cert, &out);
    return der;
}

// --- plist reading -----------------------------------------------------------

plist_t item(plist_t dict, const char *key) {
    if (dict == nullptr || plist_get_node_type(dict) != PLIST_DICT) {
        return nullptr;
    }
    return plist_dict_get_item(dict, key);
}

std::string text_of(plist_t node) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_STRING) {
        return {};
    }
    std::uint64_t length = 0;
    const char *value = plist_get_string_ptr(node, &length);
    return value ? std::string(value, length) : std::string();
}

std::optional<std::string> data_of(plist_t node) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_DATA) {
        return std::nullopt;
    }
    std::uint64_t length = 0;
    const char *value = plist_get_data_ptr(node, &length);
    return std::string(value ? value : "", value ? length : 0);
}

std::int64_t integer_of(plist_t node) {
    if (node == nullptr || plist_get_node_type(node) != PLIST_UINT) {
        return -1;
    }
    std::uint64_t value = 0;
    plist_get_uint_val(node, &value);
    return static_cast<std::int64_t>(value);
}

std::string plist_xml(plist_t root) {
    char *xml = nullptr;
    std::uint32_t length = 0;
    plist_to_xml(root, &xml, &length);
    std::string out(xml ? xml : "", xml ? length : 0);
    std::free(xml); // plist_to_xml_free (libplist 2.2) was renamed plist_mem_free (2.6)
    return out;
}

PlistPtr parse_plist(std::string_view data) {
    plist_t root = nullptr;
    if (!data.empty()) {
        // plist_from_memory's signature differs between libplist 2.2 and 2.6.
        const auto size = static_cast<std::uint32_t>(data.size());
        if (plist_is_binary(data.data(), size) != 0) {
            plist_from_bin(data.data(), size, &root);
        } else {
            plist_from_xml(data.data(), size, &root);
        }
    }
    return PlistPtr(root);
}

// --- what the real service knew about macOS Server ---------------------------

struct KnownService {
    const char *service_type;
    const char *csr_common_name;
    const char *topic_prefix;
};
constexpr KnownService known_services[] = {
    {"Service_Calendar", "com.apple.servermgrd.apns.calendar", "com.apple.calendar.XServer."},
    {"Service_Contact", "com.apple.servermgrd.apns.contact", "com.apple.contact.XServer."},
    {"Service_Mail", "com.apple.servermgrd.apns.mail", "com.apple.mail.XServer."},
    {"Service_Mgmt", "com.apple.servermgrd.apns.mgmt", "com.apple.mgmt.XServer."},
    {"Service_Alerts", "com.apple.server.apns.alerts", "com.apple.alerts.XServer."},
};

const KnownService *find_service(const std::string &service_type) {
    for (const KnownService &service : known_services) {
        if (service_type == service.service_type) {
            return &service;
        }
    }
    return nullptr;
}

std::string lower_hex_serial(const ASN1_INTEGER *serial) {
    BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
    char *hex = BN_bn2hex(bn.get());
    std::string text(hex ? hex : "0");
    OPENSSL_free(hex);
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::size_t first = text.find_first_not_of('0');
    return first == std::string::npos ? "0" : text.substr(first);
}

std::string subject_line(X509_NAME *name) {
    char *line = X509_NAME_oneline(name, nullptr, 0);
    std::string out(line ? line : "");
    OPENSSL_free(line);
    return out;
}

std::string common_name_of(X509_NAME *name) {
    int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) {
        return {};
    }
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    return std::string(reinterpret_cast<const char *>(ASN1_STRING_get0_data(data)),
                       static_cast<std::size_t>(ASN1_STRING_length(data)));
}

// --- HTTP over TLS -----------------------------------------------------------

struct HttpRequest {
    std::string method;
    std::string path;
    std::map<std::string, std::string> headers;
    std::string body;
};

bool ssl_write_all(SSL *ssl, std::string_view data) {
    while (!data.empty()) {
        int put = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
        if (put <= 0) {
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(put));
    }
    return true;
}

std::optional<HttpRequest> read_http_request(SSL *ssl) {
    std::string buffer;
    char chunk[16384];
    std::size_t header_end = std::string::npos;
    while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
        if (buffer.size() > max_header_bytes) {
            return std::nullopt;
        }
        int got = SSL_read(ssl, chunk, sizeof(chunk));
        if (got <= 0) {
            return std::nullopt;
        }
        buffer.append(chunk, static_cast<std::size_t>(got));
    }
    HttpRequest request;
    std::istringstream head(buffer.substr(0, header_end));
    std::string line;
    std::getline(head, line);
    std::istringstream request_line(line);
    request_line >> request.method >> request.path;
    while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        std::size_t colon = line.find(':');
        if (colon == std::string::npos) {
            continue;
        }
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        std::size_t value_start = line.find_first_not_of(' ', colon + 1);
        request.headers[name] = value_start == std::string::npos ? "" : line.substr(value_start);
    }
    std::size_t length = 0;
    if (auto it = request.headers.find("content-length"); it != request.headers.end()) {
        length = std::stoul(it->second);
    }
    if (length > max_body_bytes) {
        return std::nullopt;
    }
    request.body = buffer.substr(header_end + 4);
    while (request.body.size() < length) {
        int got = SSL_read(ssl, chunk, sizeof(chunk));
        if (got <= 0) {
            return std::nullopt;
        }
        request.body.append(chunk, static_cast<std::size_t>(got));
    }
    request.body.resize(length);
    return request;
}

void write_http_answer(SSL *ssl, const MockHttpAnswer &answer) {
    std::string head = "HTTP/1.1 " + std::to_string(answer.status) +
                       (answer.status == 200 ? " OK" : " Error") +
                       "\r\nContent-Type: text/xml\r\nConnection: close\r\n";
    if (!answer.chunked) {
        head += "Content-Length: " + std::to_string(answer.body.size()) + "\r\n\r\n";
        ssl_write_all(ssl, head) && ssl_write_all(ssl, answer.body);
        return;
    }
    head += "Transfer-Encoding: chunked\r\n\r\n";
    if (!ssl_write_all(ssl, head)) {
        return;
    }
    constexpr std::size_t chunk_size = 64 * 1024;
    for (std::size_t at = 0; at < answer.body.size(); at += chunk_size) {
        std::string_view part = std::string_view(answer.body).substr(at, chunk_size);
        std::ostringstream size;
        size << std::hex << part.size() << "\r\n";
        if (!ssl_write_all(ssl, size.str()) || !ssl_write_all(ssl, part) ||
            !ssl_write_all(ssl, "\r\n")) {
            return;
        }
    }
    ssl_write_all(ssl, "0\r\n\r\n");
}

} // namespace

MockCaServiceError discontinued_service_error() {
    return {-80010, "ServiceType is Invalid.", ""};
}

MockCaServiceError bad_credentials_error() {
    return {-80004, "Account Name - Password invalid.",
            "Invalid account name and password. Please verify the account name - password"};
}

class MockCaServiceServer::Impl {
public:
    explicit Impl(MockCaServiceConfig config);
    ~Impl() { stop(); }

    void start();
    void stop();

    MockCaServiceConfig config;
    mutable std::mutex mutex;
    std::condition_variable stopping_changed;
    bool stopping = false;
    std::vector<MockCaServiceRequest> requests;
    std::optional<MockCaServiceError> error;
    std::optional<MockHttpAnswer> raw_answer;
    std::chrono::milliseconds delay{0};
    std::map<std::string, std::vector<std::string>> issued; // service type -> serials
    std::uint16_t port = 0;

private:
    void run();
    void serve(int fd);
    MockHttpAnswer answer(const HttpRequest &http, MockCaServiceRequest &recorded);
    // Fills recorded from the body; returns the error to answer, if any.
    std::optional<MockCaServiceError> check(MockCaServiceRequest &recorded);
    std::string issue(X509_REQ *csr, const KnownService &service);

    SslCtxPtr tls_;
    X509Ptr issuer_cert_;
    PkeyPtr issuer_key_;
    std::string vendor_leaf_der_;
    PkeyPtr vendor_public_key_;
    int listen_fd_ = -1;
    int wake_pipe_[2] = {-1, -1};
    std::thread thread_;
};

MockCaServiceServer::Impl::Impl(MockCaServiceConfig config_in) : config(std::move(config_in)) {
    tls_.reset(SSL_CTX_new(TLS_server_method()));
    if (!tls_ || SSL_CTX_use_certificate_chain_file(tls_.get(), config.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(tls_.get(), config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        fail("loading the server certificate " + config.cert_file);
    }
    auto issuer = parse_certificates(read_file(config.issuer_cert_file));
    const std::string issuer_key_pem = read_file(config.issuer_key_file);
    BioPtr key_bio = memory_bio(issuer_key_pem); // refers to issuer_key_pem, does not copy
    issuer_key_.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (issuer.empty() || !issuer_key_) {
        fail("loading the issuer " + config.issuer_cert_file);
    }
    issuer_cert_ = std::move(issuer.front());
    auto vendor = parse_certificates(read_file(config.vendor_chain_file));
    if (vendor.empty()) {
        fail("loading the vendor chain " + config.vendor_chain_file);
    }
    vendor_leaf_der_ = der_of(vendor.front().get());
    vendor_public_key_.reset(X509_get_pubkey(vendor.front().get()));
}

void MockCaServiceServer::Impl::start() {
    stop();
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (listen_fd_ < 0 ||
        ::bind(listen_fd_, reinterpret_cast<sockaddr *>(&address), sizeof(address)) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr *>(&address), &length) != 0 ||
        ::pipe2(wake_pipe_, O_CLOEXEC) != 0) {
        throw Error(ErrorKind::unavailable,
                    std::string("mock caservice: cannot listen: ") + std::strerror(errno));
    }
    {
        std::lock_guard lock(mutex);
        port = ntohs(address.sin_port);
        stopping = false;
    }
    thread_ = std::thread([this] { run(); });
}

void MockCaServiceServer::Impl::stop() {
    if (thread_.joinable()) {
        {
            std::lock_guard lock(mutex);
            stopping = true;
        }
        stopping_changed.notify_all();
        char byte = 0;
        (void)!::write(wake_pipe_[1], &byte, 1);
        thread_.join();
    }
    for (int *fd : {&listen_fd_, &wake_pipe_[0], &wake_pipe_[1]}) {
        if (*fd >= 0) {
            ::close(*fd);
            *fd = -1;
        }
    }
}

void MockCaServiceServer::Impl::run() {
    // A client that hangs up mid-answer must not kill the test with SIGPIPE.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    for (;;) {
        pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
            return;
        }
        if (fds[1].revents != 0) {
            return;
        }
        if (fds[0].revents & POLLIN) {
            int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd >= 0) {
                serve(fd);
                ::close(fd);
            }
        }
    }
}

void MockCaServiceServer::Impl::serve(int fd) {
    timeval timeout{socket_timeout_seconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    SslPtr ssl(SSL_new(tls_.get()));
    if (!ssl || SSL_set_fd(ssl.get(), fd) != 1 || SSL_accept(ssl.get()) != 1) {
        ERR_clear_error();
        return;
    }
    std::optional<HttpRequest> http = read_http_request(ssl.get());
    if (!http) {
        ERR_clear_error();
        return;
    }
    MockCaServiceRequest recorded;
    MockHttpAnswer reply;
    try {
        reply = answer(*http, recorded);
    } catch (const std::exception &e) {
        reply = {500, std::string("mock caservice: ") + e.what(), false};
    }
    {
        std::unique_lock lock(mutex);
        requests.push_back(std::move(recorded));
        if (stopping_changed.wait_for(lock, delay, [this] { return stopping; })) {
            return;
        }
    }
    write_http_answer(ssl.get(), reply);
    SSL_shutdown(ssl.get());
    ERR_clear_error();
}

MockHttpAnswer MockCaServiceServer::Impl::answer(const HttpRequest &http,
                                                 MockCaServiceRequest &recorded) {
    recorded.method = http.method;
    recorded.path = http.path;
    recorded.headers = http.headers;
    recorded.body = http.body;
    std::optional<MockHttpAnswer> raw;
    std::optional<MockCaServiceError> scripted;
    {
        std::lock_guard lock(mutex);
        raw = raw_answer;
        scripted = error;
    }
    std::optional<MockCaServiceError> rejection = check(recorded);
    if (raw) {
        return *raw;
    }
    if (http.method != "POST" ||
        (http.path != "/pushcert/caservice/new" && http.path != "/pushcert/caservice/renew")) {
        return {404, "not found", false};
    }
    if (!rejection && scripted) {
        rejection = scripted;
    }

    PlistPtr root(plist_new_dict());
    plist_t response = plist_new_dict();
    plist_t status = plist_new_dict();
    MockCaServiceError outcome = rejection.value_or(MockCaServiceError{});
    plist_dict_set_item(status, "ErrorDescription", plist_new_string(outcome.description.c_str()));
    plist_dict_set_item(status, "ErrorMessage", plist_new_string(outcome.message.c_str()));
    plist_dict_set_item(status, "ErrorCode",
                        plist_new_uint(static_cast<std::uint64_t>(outcome.code)));
    plist_dict_set_item(response, "Status", status);
    recorded.error_code = outcome.code;
    recorded.error_message = outcome.message;
    if (!rejection) {
        plist_t certificates = plist_new_array();
        plist_dict_set_item(response, "Certificates", certificates);
        for (const MockCaServiceEntry &entry : recorded.entries) {
            BioPtr bio = memory_bio(entry.csr_pem);
            ReqPtr csr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
            plist_t issued_item = plist_new_dict();
            plist_dict_set_item(
                issued_item, "Certificate",
                plist_new_string(issue(csr.get(), *find_service(entry.service_type)).c_str()));
            plist_dict_set_item(issued_item, "CertRequestNo",
                                plist_new_uint(static_cast<std::uint64_t>(entry.request_no)));
            plist_dict_set_item(issued_item, "Description",
                                plist_new_string(entry.description.c_str()));
            plist_dict_set_item(issued_item, "ServiceType",
                                plist_new_string(entry.service_type.c_str()));
            plist_array_append_item(certificates, issued_item);
        }
    }
    plist_dict_set_item(root.get(), "Response", response);
    plist_t header = plist_new_dict();
    for (const auto &[key, value] : recorded.header_fields) {
        if (key != "Version") {
            plist_dict_set_item(header, key.c_str(), plist_new_string(value.c_str()));
        }
    }
    plist_dict_set_item(root.get(), "Header", header);
    return {200, plist_xml(root.get()), false};
}

std::optional<MockCaServiceError> MockCaServiceServer::Impl::check(MockCaServiceRequest &recorded) {
    auto malformed = [](const std::string &why) {
        return MockCaServiceError{mock_error_malformed, "mock: " + why, ""};
    };
    PlistPtr outer = parse_plist(recorded.body);
    std::optional<std::string> chain = data_of(item(outer.get(), "PushCertCertificateChain"));
    std::optional<std::string> request_plist = data_of(item(outer.get(), "PushCertRequestPlist"));
    std::optional<std::string> signature = data_of(item(outer.get(), "PushCertSignature"));
    plist_t signed_flag = item(outer.get(), "PushCertSignedRequest");
    if (signed_flag != nullptr && plist_get_node_type(signed_flag) == PLIST_BOOLEAN) {
        std::uint8_t value = 0;
        plist_get_bool_val(signed_flag, &value);
        recorded.signed_request = value != 0;
    }
    if (!chain || !request_plist || !signature || !recorded.signed_request) {
        return malformed("not a signed PushCert request");
    }
    recorded.request_plist = *request_plist;
    auto sent_chain = parse_certificates(*chain);
    recorded.chain_trusted =
        !sent_chain.empty() && der_of(sent_chain.front().get()) == vendor_leaf_der_;
    MdCtxPtr verify(EVP_MD_CTX_new());
    recorded.signature_valid =
        recorded.chain_trusted &&
        EVP_DigestVerifyInit(verify.get(), nullptr, EVP_sha1(), nullptr,
                             vendor_public_key_.get()) == 1 &&
        EVP_DigestVerify(verify.get(), reinterpret_cast<const unsigned char *>(signature->data()),
                         signature->size(),
                         reinterpret_cast<const unsigned char *>(request_plist->data()),
                         request_plist->size()) == 1;
    ERR_clear_error();

    PlistPtr inner = parse_plist(*request_plist);
    plist_t header = item(inner.get(), "Header");
    if (header != nullptr && plist_get_node_type(header) == PLIST_DICT) {
        plist_dict_iter it = nullptr;
        plist_dict_new_iter(header, &it);
        for (;;) {
            char *key = nullptr;
            plist_t value = nullptr;
            plist_dict_next_item(header, it, &key, &value);
            if (key == nullptr) {
                break;
            }
            recorded.header_fields[key] = text_of(value);
            free(key);
        }
        free(it);
    }
    plist_t request = item(inner.get(), "Request");
    recorded.profile_type = text_of(item(request, "ProfileType"));
    recorded.requester_type = text_of(item(request, "RequesterType"));
    plist_t user = item(request, "User");
    recorded.apple_id = text_of(item(user, "AccountName"));
    recorded.password_hash = text_of(item(user, "PasswordHash"));
    plist_t list = item(request, "CertRequestList");
    if (list != nullptr && plist_get_node_type(list) == PLIST_ARRAY) {
        for (std::uint32_t i = 0; i < plist_array_get_size(list); ++i) {
            plist_t entry_node = plist_array_get_item(list, i);
            MockCaServiceEntry entry;
            entry.request_no = integer_of(item(entry_node, "CertRequestNo"));
            entry.service_type = text_of(item(entry_node, "ServiceType"));
            entry.description = text_of(item(entry_node, "Description"));
            entry.csr_pem = text_of(item(entry_node, "CSR"));
            entry.certificate_serial = text_of(item(entry_node, "CertificateSerialNumber"));
            BioPtr bio = memory_bio(entry.csr_pem);
            ReqPtr csr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
            if (csr) {
                entry.csr_subject = subject_line(X509_REQ_get_subject_name(csr.get()));
                EVP_PKEY *key = X509_REQ_get0_pubkey(csr.get());
                entry.csr_signature_valid = key != nullptr && X509_REQ_verify(csr.get(), key) == 1;
            }
            ERR_clear_error();
            recorded.entries.push_back(std::move(entry));
        }
    }

    if (!recorded.signature_valid) {
        return MockCaServiceError{mock_error_bad_signature,
                                  recorded.chain_trusted ? "mock: signature invalid"
                                                         : "mock: vendor certificate unknown",
                                  ""};
    }
    if (recorded.header_fields["ClientApplicationName"] != "XServer" ||
        recorded.requester_type != "XServer" || recorded.profile_type != "Production") {
        return malformed("not an XServer production request");
    }
    if (recorded.apple_id != config.apple_id || recorded.password_hash != config.password_hash) {
        return bad_credentials_error();
    }
    if (recorded.entries.empty()) {
        return malformed("no certificate requested");
    }
    bool renewal = recorded.path == "/pushcert/caservice/renew";
    for (const MockCaServiceEntry &entry : recorded.entries) {
        const KnownService *service = find_service(entry.service_type);
        if (service == nullptr) {
            return discontinued_service_error(); // what Apple says to an unknown ServiceType
        }
        BioPtr bio = memory_bio(entry.csr_pem);
        ReqPtr csr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
        ERR_clear_error();
        if (!entry.csr_signature_valid || !csr ||
            common_name_of(X509_REQ_get_subject_name(csr.get())) != service->csr_common_name) {
            return malformed("bad CSR for " + entry.service_type);
        }
        if (renewal) {
            std::lock_guard lock(mutex);
            const auto &serials = issued[entry.service_type];
            if (std::find(serials.begin(), serials.end(), entry.certificate_serial) ==
                serials.end()) {
                return MockCaServiceError{mock_error_unknown_serial,
                                          "mock: no certificate " + entry.certificate_serial +
                                              " to renew for " + entry.service_type,
                                          ""};
            }
        } else if (!entry.certificate_serial.empty()) {
            return malformed("a serial number in a request for a new certificate");
        }
    }
    return std::nullopt;
}

std::string MockCaServiceServer::Impl::issue(X509_REQ *csr, const KnownService &service) {
    std::chrono::seconds validity;
    {
        std::lock_guard lock(mutex);
        validity = config.validity;
    }
    X509Ptr cert(X509_new());
    BnPtr serial(BN_new());
    if (!cert || !serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
        fail("serial");
    }
    X509_set_version(cert.get(), X509_VERSION_3);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert_.get()));
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(validity.count()));
    X509_NAME *name = X509_get_subject_name(cert.get());
    std::string uid = service.topic_prefix + config.account_uuid;
    std::string cn = "APSP:" + config.account_uuid;
    X509_NAME_add_entry_by_NID(name, NID_userId, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char *>(uid.c_str()), -1, -1, 0);
    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char *>(cn.c_str()), -1, -1, 0);
    X509_NAME_add_entry_by_NID(name, NID_countryName, MBSTRING_ASC,
                               reinterpret_cast<const unsigned char *>("US"), -1, -1, 0);
    X509_set_pubkey(cert.get(), X509_REQ_get0_pubkey(csr));
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer_cert_.get(), cert.get(), nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                              std::pair{NID_key_usage, "critical,digitalSignature"},
                              std::pair{NID_ext_key_usage, "clientAuth"}}) {
        X509_EXTENSION *extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        X509_add_ext(cert.get(), extension, -1);
        X509_EXTENSION_free(extension);
    }
    if (X509_sign(cert.get(), issuer_key_.get(), EVP_sha256()) <= 0) {
        fail("signing a certificate");
    }
    BioPtr out(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(out.get(), cert.get());
    char *data = nullptr;
    long size = BIO_get_mem_data(out.get(), &data);
    {
        std::lock_guard lock(mutex);
        issued[service.service_type].push_back(
            lower_hex_serial(X509_get0_serialNumber(cert.get())));
    }
    return std::string(data, static_cast<std::size_t>(size));
}

MockCaServiceServer::MockCaServiceServer(MockCaServiceConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}

MockCaServiceServer::~MockCaServiceServer() = default;

void MockCaServiceServer::start() {
    impl_->start();
}
void MockCaServiceServer::stop() {
    impl_->stop();
}

std::uint16_t MockCaServiceServer::port() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->port;
}

std::string MockCaServiceServer::url() const {
    return "https://127.0.0.1:" + std::to_string(port()) + "/pushcert/caservice";
}

std::vector<MockCaServiceRequest> MockCaServiceServer::requests() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->requests;
}

void MockCaServiceServer::set_error(std::optional<MockCaServiceError> error) {
    std::lock_guard lock(impl_->mutex);
    impl_->error = std::move(error);
}

void MockCaServiceServer::set_raw_answer(std::optional<MockHttpAnswer> answer) {
    std::lock_guard lock(impl_->mutex);
    impl_->raw_answer = std::move(answer);
}

void MockCaServiceServer::set_answer_delay(std::chrono::milliseconds delay) {
    std::lock_guard lock(impl_->mutex);
    impl_->delay = delay;
}

void MockCaServiceServer::set_validity(std::chrono::seconds validity) {
    std::lock_guard lock(impl_->mutex);
    impl_->config.validity = validity;
}

std::vector<std::string>
MockCaServiceServer::issued_serials(const std::string &service_type) const {
    std::lock_guard lock(impl_->mutex);
    auto it = impl_->issued.find(service_type);
    return it == impl_->issued.end() ? std::vector<std::string>{} : it->second;
}

} // namespace xaps::test
