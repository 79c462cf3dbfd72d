// The mock APNs server, driven by a real TLS + HTTP/2 client over loopback.
#include "eventually.h"
#include "mock-apns-answers.h"
#include "mock-apns-server.h"
#include "test-keys.h"
#include "test-pki.h"

#include "provider-token.h"

#include <gtest/gtest.h>
#include <json/json.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <thread>

namespace {

using namespace std::chrono_literals;
using xaps::test::answer_after;
using xaps::test::apple_like_mock_config;
using xaps::test::eventually;
using xaps::test::MockApnsConfig;
using xaps::test::MockApnsRequest;
using xaps::test::MockApnsResponse;
using xaps::test::MockApnsServer;
using xaps::test::test_pki_file;
using xaps::test::test_pki_topic;

// How long to wait for something that takes milliseconds, even under valgrind
// on a busy machine.
constexpr std::chrono::milliseconds patience = 10s;

// APNs writes apns-id as an upper-case UUID, e.g. 123E4567-E89B-12D3-A456-4266554400A0.
bool is_upper_case_uuid(const std::string &text) {
    if (text.size() != 36)
        return false;
    for (size_t i = 0; i < text.size(); ++i) {
        const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
        const bool upper_hex =
            (text[i] >= '0' && text[i] <= '9') || (text[i] >= 'A' && text[i] <= 'F');
        if (dash_position ? text[i] != '-' : !upper_hex)
            return false;
    }
    return true;
}

bool parse_json(const std::string &text, Json::Value &value) {
    const std::unique_ptr<Json::CharReader> reader(Json::CharReaderBuilder().newCharReader());
    return reader->parse(text.data(), text.data() + text.size(), &value, nullptr);
}

// A device token as Apple issues them today: 32 bytes in hex.
const std::string apple_token = "2a7e5e5b5d6e4a9c8e2b1f9d3c7a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a";
const std::string push_body = R"({"aps":{"account-id":"0715A26B-CA09-4730-A419-793000CA982E"}})";

// The headers of a push APNs accepts over a certificate connection, where
// apns-topic may be left out; `extra` adds to them or replaces one.
std::vector<std::pair<std::string, std::string>>
push_headers(const std::vector<std::pair<std::string, std::string>> &extra = {}) {
    std::vector<std::pair<std::string, std::string>> headers{{"apns-push-type", "background"},
                                                             {"apns-expiration", "1700000000"}};
    for (const auto &[name, value] : extra) {
        const auto same = std::find_if(headers.begin(), headers.end(),
                                       [&](const auto &header) { return header.first == name; });
        if (same != headers.end())
            same->second = value;
        else
            headers.emplace_back(name, value);
    }
    return headers;
}

struct ClientCertificate {
    std::string cert_file;
    std::string key_file;
};

// A minimal HTTP/2 client over TLS, in the test thread: enough to drive the
// mock the way the APNs client will, and to see every frame it sends back.
class TestClient {
public:
    struct Response {
        int status = 0;
        std::map<std::string, std::string> headers;
        std::string body;
        bool closed = false;
        uint32_t error_code = NGHTTP2_NO_ERROR; // of the stream's closing
        std::chrono::steady_clock::time_point closed_at;
    };

    TestClient(uint16_t port, const std::optional<ClientCertificate> &certificate) {
        ctx_ = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
        SSL_CTX_load_verify_locations(ctx_, test_pki_file("ca.pem").c_str(), nullptr);
        SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
        if (certificate) {
            SSL_CTX_use_certificate_file(ctx_, certificate->cert_file.c_str(), SSL_FILETYPE_PEM);
            SSL_CTX_use_PrivateKey_file(ctx_, certificate->key_file.c_str(), SSL_FILETYPE_PEM);
        }
        static constexpr unsigned char alpn[] = {2, 'h', '2'};
        SSL_CTX_set_alpn_protos(ctx_, alpn, sizeof alpn);
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        const int on = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(port);
        ::connect(fd_, reinterpret_cast<sockaddr *>(&address), sizeof address);
        ssl_ = SSL_new(ctx_);
        SSL_set_fd(ssl_, fd_);
        SSL_set_tlsext_host_name(ssl_, "localhost");
        SSL_set1_host(ssl_, "localhost");
    }

    ~TestClient() {
        if (session_ != nullptr)
            nghttp2_session_del(session_);
        SSL_free(ssl_);
        SSL_CTX_free(ctx_);
        ::close(fd_);
        ERR_clear_error();
    }

    // The TLS handshake and the HTTP/2 preface. With TLS 1.3 a server that
    // rejects our certificate only says so after the client finished, so a
    // true result does not mean the server accepted us: see usable().
    bool connect(std::chrono::milliseconds timeout = patience) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            ERR_clear_error();
            const int result = SSL_connect(ssl_);
            if (result == 1)
                break;
            const int error = SSL_get_error(ssl_, result);
            if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE)
                return false;
            if (!wait_socket(error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, deadline))
                return false;
        }
        const unsigned char *protocol = nullptr;
        unsigned int length = 0;
        SSL_get0_alpn_selected(ssl_, &protocol, &length);
        if (std::string_view(reinterpret_cast<const char *>(protocol), length) != "h2")
            return false;
        start_session();
        return true;
    }

    // True when a push gets an HTTP answer over this connection.
    bool usable() {
        if (!connect())
            return false;
        const int32_t stream = push();
        return run_until([&] { return responses_[stream].closed; }, patience) &&
               responses_[stream].status != 0;
    }

    // A push APNs accepts over a certificate connection, unless `headers`
    // or the arguments make it otherwise.
    int32_t push(const std::vector<std::pair<std::string, std::string>> &headers = push_headers(),
                 const std::string &token = apple_token, const std::string &body = push_body) {
        return submit("POST", "/3/device/" + token, headers, body);
    }

    int32_t submit(const std::string &method, const std::string &path,
                   const std::vector<std::pair<std::string, std::string>> &extra_headers,
                   const std::string &body) {
        std::vector<std::pair<std::string, std::string>> headers{{":method", method},
                                                                 {":scheme", "https"},
                                                                 {":authority", "localhost"},
                                                                 {":path", path}};
        headers.insert(headers.end(), extra_headers.begin(), extra_headers.end());
        std::vector<nghttp2_nv> nva;
        for (const auto &[name, value] : headers)
            nva.push_back(
                nghttp2_nv{const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(name.data())),
                           const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(value.data())),
                           name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
        nghttp2_data_provider provider{};
        const nghttp2_data_provider *body_provider = nullptr;
        if (!body.empty()) {
            bodies_.push_back(BodySource{body, 0});
            provider.source.ptr = &bodies_.back();
            provider.read_callback = read_body;
            body_provider = &provider;
        }
        const int32_t stream_id =
            nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), body_provider, this);
        flush();
        return stream_id;
    }

    // Processes I/O until done() holds; false on timeout.
    bool run_until(const std::function<bool()> &done, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!done()) {
            if (eof_)
                return false;
            flush();
            if (SSL_pending(ssl_) == 0 && !wait_socket(POLLIN, deadline))
                return false;
            read_available();
            flush();
        }
        return true;
    }

    Response &response(int32_t stream_id) { return responses_[stream_id]; }
    bool goaway_received() const { return goaway_.has_value(); }
    const nghttp2_goaway &goaway() const { return *goaway_; }

private:
    struct BodySource {
        std::string data;
        size_t offset;
    };

    bool wait_socket(short events, std::chrono::steady_clock::time_point deadline) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left <= 0ms)
            return false;
        pollfd fd{fd_, events, 0};
        return ::poll(&fd, 1, static_cast<int>(left.count())) > 0;
    }

    void start_session() {
        nghttp2_session_callbacks *callbacks = nullptr;
        nghttp2_session_callbacks_new(&callbacks);
        nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
        nghttp2_session_client_new(&session_, callbacks, this);
        nghttp2_session_callbacks_del(callbacks);
        nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
        flush();
    }

    void flush() {
        if (session_ == nullptr || eof_)
            return;
        for (;;) {
            const uint8_t *data = nullptr;
            const ssize_t length = nghttp2_session_mem_send(session_, &data);
            if (length <= 0)
                return;
            // Small writes on loopback: a blocking retry loop is enough.
            size_t written = 0;
            while (written < static_cast<size_t>(length)) {
                ERR_clear_error();
                const int result =
                    SSL_write(ssl_, data + written, static_cast<int>(length - written));
                if (result > 0) {
                    written += static_cast<size_t>(result);
                    continue;
                }
                const int error = SSL_get_error(ssl_, result);
                if (error != SSL_ERROR_WANT_WRITE && error != SSL_ERROR_WANT_READ) {
                    eof_ = true;
                    return;
                }
                wait_socket(POLLOUT, std::chrono::steady_clock::now() + 1s);
            }
        }
    }

    void read_available() {
        std::array<uint8_t, 16384> buffer{};
        for (;;) {
            ERR_clear_error();
            const int length = SSL_read(ssl_, buffer.data(), buffer.size());
            if (length > 0) {
                if (session_ == nullptr ||
                    nghttp2_session_mem_recv(session_, buffer.data(), length) < 0)
                    eof_ = true;
                continue;
            }
            const int error = SSL_get_error(ssl_, length);
            if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE)
                eof_ = true;
            return;
        }
    }

    static TestClient &self(void *user_data) { return *static_cast<TestClient *>(user_data); }

    static int on_header(nghttp2_session *, const nghttp2_frame *frame, const uint8_t *name,
                         size_t name_length, const uint8_t *value, size_t value_length, uint8_t,
                         void *user_data) {
        Response &response = self(user_data).responses_[frame->hd.stream_id];
        const std::string header_name(reinterpret_cast<const char *>(name), name_length);
        const std::string header_value(reinterpret_cast<const char *>(value), value_length);
        if (header_name == ":status")
            response.status = std::stoi(header_value);
        else
            response.headers[header_name] = header_value;
        return 0;
    }

    static int on_data_chunk(nghttp2_session *, uint8_t, int32_t stream_id, const uint8_t *data,
                             size_t length, void *user_data) {
        self(user_data).responses_[stream_id].body.append(reinterpret_cast<const char *>(data),
                                                          length);
        return 0;
    }

    static int on_frame(nghttp2_session *, const nghttp2_frame *frame, void *user_data) {
        if (frame->hd.type == NGHTTP2_GOAWAY)
            self(user_data).goaway_ = frame->goaway;
        return 0;
    }

    static int on_stream_close(nghttp2_session *, int32_t stream_id, uint32_t error_code,
                               void *user_data) {
        Response &response = self(user_data).responses_[stream_id];
        response.closed = true;
        response.error_code = error_code;
        response.closed_at = std::chrono::steady_clock::now();
        return 0;
    }

    static ssize_t read_body(nghttp2_session *, int32_t, uint8_t *buffer, size_t length,
                             uint32_t *data_flags, nghttp2_data_source *source, void *) {
        BodySource &body = *static_cast<BodySource *>(source->ptr);
        const size_t count = std::min(length, body.data.size() - body.offset);
        std::memcpy(buffer, body.data.data() + body.offset, count);
        body.offset += count;
        if (body.offset == body.data.size())
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(count);
    }

    SSL_CTX *ctx_ = nullptr;
    SSL *ssl_ = nullptr;
    int fd_ = -1;
    nghttp2_session *session_ = nullptr;
    bool eof_ = false;
    std::list<BodySource> bodies_;
    std::map<int32_t, Response> responses_;
    std::optional<nghttp2_goaway> goaway_;
};

const ClientCertificate trusted_client{test_pki_file("client.pem"), test_pki_file("client.key")};

class MockApnsServerTest : public ::testing::Test {
protected:
    void SetUp() override { server_.start(); }

    MockApnsServer server_{apple_like_mock_config()};
};

TEST_F(MockApnsServerTest, EchoesTheApnsIdTheClientChose) {
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const std::string id = "123E4567-E89B-12D3-A456-4266554400A0";
    const int32_t stream = client.push(push_headers({{"apns-id", id}}));
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    EXPECT_EQ(client.response(stream).headers["apns-id"], id);
}

TEST_F(MockApnsServerTest, ClientCertificateMustVerifyAgainstTheConfiguredCa) {
    struct Row {
        const char *name;
        std::optional<ClientCertificate> certificate;
        bool accepted;
    };
    const Row rows[] = {
        {"trusted", trusted_client, true},
        {"short topic",
         ClientCertificate{test_pki_file("client-short-topic.pem"),
                           test_pki_file("client-short-topic.key")},
         true},
        {"other CA",
         ClientCertificate{test_pki_file("client-untrusted.pem"),
                           test_pki_file("client-untrusted.key")},
         false},
        {"expired",
         ClientCertificate{test_pki_file("client-expired.pem"),
                           test_pki_file("client-expired.key")},
         false},
        {"none", std::nullopt, false},
    };
    size_t expected_failures = 0;
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        TestClient client(server_.port(), row.certificate);
        EXPECT_EQ(client.usable(), row.accepted);
        if (!row.accepted)
            ++expected_failures;
        EXPECT_TRUE(
            eventually([&] { return server_.handshake_failures() == expected_failures; }, patience))
            << server_.handshake_failures();
    }
    EXPECT_EQ(server_.connections_accepted(), std::size(rows));
    const std::vector<MockApnsRequest> requests = server_.requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[0].client_uid, test_pki_topic());
    EXPECT_EQ(requests[0].client_subject,
              "/UID=" + test_pki_topic() + "/CN=APSP:0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c/C=US");
    EXPECT_EQ(requests[1].client_uid, "com.apple.mail.nil");
}

TEST_F(MockApnsServerTest, UnregisteredWithoutTimestampSaysNow) {
    MockApnsResponse unregistered;
    unregistered.status = 410;
    server_.set_responder([&](const MockApnsRequest &) { return unregistered; });
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const int64_t before = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    const int32_t stream = client.push();
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    Json::Value body;
    ASSERT_TRUE(parse_json(client.response(stream).body, body));
    EXPECT_GE(body["timestamp"].asInt64(), before);
    EXPECT_LT(body["timestamp"].asInt64(), before + 60'000);
}

// One row per request APNs refuses, each with exactly one thing wrong, and
// the limits it still accepts. The responder is never asked about a refusal.
TEST_F(MockApnsServerTest, RefusesWhatApnsRefusesWithItsStatusAndReason) {
    using Headers = std::vector<std::pair<std::string, std::string>>;
    struct Row {
        const char *name;
        std::string method;
        std::string path;
        Headers headers;
        std::string body;
        int status;
        std::string reason;
    };
    const std::string device = "/3/device/" + apple_token;
    const std::string json_4096 = R"({"aps":{},"x":")" + std::string(4096 - 17, 'x') + R"("})";
    const std::string json_4097 = R"({"aps":{},"x":")" + std::string(4097 - 17, 'x') + R"("})";
    const std::vector<Row> rows = {
        {"valid", "POST", device, push_headers(), push_body, 200, ""},
        {"GET", "GET", device, push_headers(), push_body, 405, "MethodNotAllowed"},
        {"PUT", "PUT", device, push_headers(), push_body, 405, "MethodNotAllowed"},
        {"version 2 path", "POST", "/2/device/" + apple_token, push_headers(), push_body, 404,
         "BadPath"},
        {"path beyond the token", "POST", device + "/extra", push_headers(), push_body, 404,
         "BadPath"},
        {"root path", "POST", "/", push_headers(), push_body, 404, "BadPath"},
        {"no token", "POST", "/3/device/", push_headers(), push_body, 400, "MissingDeviceToken"},
        {"token of 62 digits", "POST", "/3/device/" + std::string(62, 'a'), push_headers(),
         push_body, 400, "BadDeviceToken"},
        {"token of 65 digits", "POST", "/3/device/" + std::string(65, 'a'), push_headers(),
         push_body, 400, "BadDeviceToken"},
        {"token of 202 digits", "POST", "/3/device/" + std::string(202, 'a'), push_headers(),
         push_body, 400, "BadDeviceToken"},
        {"token of 200 digits", "POST", "/3/device/" + std::string(200, 'a'), push_headers(),
         push_body, 200, ""},
        {"upper-case token", "POST", "/3/device/" + std::string(64, 'A'), push_headers(), push_body,
         200, ""},
        {"token not hex", "POST", "/3/device/" + std::string(63, 'a') + "g", push_headers(),
         push_body, 400, "BadDeviceToken"},
        {"the certificate's topic", "POST", device,
         push_headers({{"apns-topic", test_pki_topic()}}), push_body, 200, ""},
        {"another topic", "POST", device,
         push_headers({{"apns-topic", "com.apple.mail.XServer.other"}}), push_body, 400,
         "BadTopic"},
        {"empty topic", "POST", device, push_headers({{"apns-topic", ""}}), push_body, 400,
         "BadTopic"},
        {"apns-id lower-case UUID", "POST", device,
         push_headers({{"apns-id", "123e4567-e89b-12d3-a456-4266554400a0"}}), push_body, 200, ""},
        {"apns-id not a UUID", "POST", device, push_headers({{"apns-id", "push-1"}}), push_body,
         400, "BadMessageId"},
        {"expiration 0", "POST", device, push_headers({{"apns-expiration", "0"}}), push_body, 200,
         ""},
        {"expiration a date", "POST", device,
         push_headers({{"apns-expiration", "2026-12-05T10:00:00Z"}}), push_body, 400,
         "BadExpirationDate"},
        {"expiration negative", "POST", device, push_headers({{"apns-expiration", "-1"}}),
         push_body, 400, "BadExpirationDate"},
        {"expiration empty", "POST", device, push_headers({{"apns-expiration", ""}}), push_body,
         400, "BadExpirationDate"},
        {"priority 10", "POST", device, push_headers({{"apns-priority", "10"}}), push_body, 200,
         ""},
        {"priority 5", "POST", device, push_headers({{"apns-priority", "5"}}), push_body, 200, ""},
        {"priority 1", "POST", device, push_headers({{"apns-priority", "1"}}), push_body, 200, ""},
        {"priority 7", "POST", device, push_headers({{"apns-priority", "7"}}), push_body, 400,
         "BadPriority"},
        {"priority high", "POST", device, push_headers({{"apns-priority", "high"}}), push_body, 400,
         "BadPriority"},
        {"push type alert", "POST", device, push_headers({{"apns-push-type", "alert"}}), push_body,
         200, ""},
        {"push type unknown", "POST", device, push_headers({{"apns-push-type", "mail"}}), push_body,
         400, "InvalidPushType"},
        {"push type absent", "POST", device, Headers{{"apns-expiration", "1700000000"}}, push_body,
         400, "InvalidPushType"},
        {"collapse id of 64 bytes", "POST", device,
         push_headers({{"apns-collapse-id", std::string(64, 'c')}}), push_body, 200, ""},
        {"collapse id of 65 bytes", "POST", device,
         push_headers({{"apns-collapse-id", std::string(65, 'c')}}), push_body, 400,
         "BadCollapseId"},
        {"no body", "POST", device, push_headers(), "", 400, "PayloadEmpty"},
        {"body of 4096 bytes", "POST", device, push_headers(), json_4096, 200, ""},
        {"body of 4097 bytes", "POST", device, push_headers(), json_4097, 413, "PayloadTooLarge"},
        {"body not JSON", "POST", device, push_headers(), "aps", 400, "PayloadEmpty"},
        {"body a JSON array", "POST", device, push_headers(), "[1]", 400, "PayloadEmpty"},
    };
    ASSERT_EQ(json_4096.size(), 4096u);
    ASSERT_EQ(json_4097.size(), 4097u);
    server_.set_responder([](const MockApnsRequest &) -> MockApnsResponse {
        throw std::runtime_error("the responder only sees requests APNs accepts");
    });
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    size_t refused = 0;
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        const int32_t stream = client.submit(row.method, row.path, row.headers, row.body);
        ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
        const bool accepted = row.status == 200;
        EXPECT_EQ(client.response(stream).status, accepted ? 500 : row.status);
        EXPECT_FALSE(client.response(stream).headers["apns-id"].empty());
        Json::Value body;
        ASSERT_TRUE(parse_json(client.response(stream).body, body)) << client.response(stream).body;
        EXPECT_EQ(body["reason"].asString(), accepted ? "InternalServerError" : row.reason);
        if (!accepted) {
            ++refused;
            const std::vector<MockApnsRequest> list = server_.refused_requests();
            ASSERT_EQ(list.size(), refused);
            EXPECT_EQ(list.back().refused_status, row.status);
            EXPECT_EQ(list.back().refused_reason, row.reason);
        }
    }
    EXPECT_EQ(server_.requests_refused(), refused);
    EXPECT_EQ(server_.requests_received(), rows.size() - refused);
    EXPECT_EQ(server_.requests().size(), rows.size() - refused);
    for (const MockApnsRequest &request : server_.requests())
        EXPECT_EQ(request.refused_status, 0) << request.path;
}

TEST_F(MockApnsServerTest, WithoutResponderAnswersAValidPush200) {
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const int32_t stream = client.push();
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    EXPECT_EQ(client.response(stream).status, 200);
    EXPECT_EQ(client.response(stream).body, "");
    EXPECT_TRUE(is_upper_case_uuid(client.response(stream).headers["apns-id"]))
        << client.response(stream).headers["apns-id"];
}

TEST_F(MockApnsServerTest, RefusedRequestsAreNotCountedAsPushes) {
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const int32_t refused = client.push(push_headers({{"apns-priority", "7"}}));
    ASSERT_TRUE(client.run_until([&] { return client.response(refused).closed; }, patience));
    EXPECT_FALSE(server_.wait_for_requests(1, 100ms));
    EXPECT_EQ(server_.requests_received(), 0u);
    EXPECT_TRUE(server_.requests().empty());
    ASSERT_EQ(server_.refused_requests().size(), 1u);
    EXPECT_EQ(server_.refused_requests()[0].device_token, apple_token);
    EXPECT_EQ(server_.refused_requests()[0].headers.at("apns-priority"), "7");

    server_.clear_requests();
    EXPECT_EQ(server_.requests_refused(), 0u);
    EXPECT_TRUE(server_.refused_requests().empty());
}

TEST(MockApnsServerConfig, WithoutCertificateOrTokenAuthEveryPushLacksACredential) {
    MockApnsConfig config = apple_like_mock_config();
    config.client_ca_file.clear();
    MockApnsServer server(config);
    server.start();
    TestClient client(server.port(), std::nullopt);
    ASSERT_TRUE(client.connect());
    const int32_t stream = client.push(push_headers({{"apns-topic", test_pki_topic()}}));
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    EXPECT_EQ(client.response(stream).status, 403);
    Json::Value body;
    ASSERT_TRUE(parse_json(client.response(stream).body, body));
    EXPECT_EQ(body["reason"].asString(), "MissingProviderToken");
}

// The benchmarks' mode: h2load has no certificate, the worker has the test one.
TEST(MockApnsServerConfig, AcceptingAnonymousClientsStillChecksACertificateAndTheTopic) {
    MockApnsConfig config = apple_like_mock_config();
    config.accept_anonymous_clients = true;
    MockApnsServer server(config);
    server.start();

    TestClient anonymous(server.port(), std::nullopt);
    ASSERT_TRUE(anonymous.connect());
    const int32_t accepted = anonymous.push(push_headers({{"apns-topic", "com.example.any"}}));
    const int32_t without_topic = anonymous.push(push_headers({}));
    ASSERT_TRUE(anonymous.run_until(
        [&] {
            return anonymous.response(accepted).closed && anonymous.response(without_topic).closed;
        },
        patience));
    EXPECT_EQ(anonymous.response(accepted).status, 200);
    EXPECT_EQ(anonymous.response(without_topic).status, 400);
    Json::Value body;
    ASSERT_TRUE(parse_json(anonymous.response(without_topic).body, body));
    EXPECT_EQ(body["reason"].asString(), "MissingTopic");

    TestClient certified(server.port(), trusted_client);
    ASSERT_TRUE(certified.connect());
    const int32_t wrong_topic = certified.push(push_headers({{"apns-topic", "com.example.any"}}));
    ASSERT_TRUE(
        certified.run_until([&] { return certified.response(wrong_topic).closed; }, patience));
    EXPECT_EQ(certified.response(wrong_topic).status, 400);

    TestClient untrusted(server.port(), ClientCertificate{test_pki_file("client-untrusted.pem"),
                                                          test_pki_file("client-untrusted.key")});
    EXPECT_FALSE(untrusted.usable());
}

TEST_F(MockApnsServerTest, ResponderExceptionBecomesInternalServerError) {
    server_.set_responder([](const MockApnsRequest &) -> MockApnsResponse {
        throw std::runtime_error("scripted failure");
    });
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const int32_t stream = client.push();
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    EXPECT_EQ(client.response(stream).status, 500);
}

TEST_F(MockApnsServerTest, DelayedAnswerDoesNotStallOtherStreams) {
    const std::string slow_token(64, 'a');
    server_.set_responder([&](const MockApnsRequest &request) {
        MockApnsResponse response;
        if (request.device_token == slow_token)
            response.delay = 300ms;
        return response;
    });
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const auto sent = std::chrono::steady_clock::now();
    const int32_t slow = client.push(push_headers(), slow_token);
    const int32_t fast = client.push(push_headers(), std::string(64, 'b'));
    ASSERT_TRUE(client.run_until([&] { return client.response(fast).closed; }, patience));
    EXPECT_FALSE(client.response(slow).closed);
    ASSERT_TRUE(client.run_until([&] { return client.response(slow).closed; }, patience));
    EXPECT_EQ(client.response(slow).status, 200);
    EXPECT_GE(client.response(slow).closed_at - sent, 300ms);
}

TEST_F(MockApnsServerTest, GoawayRefusingStreamsLeavesThemUnanswered) {
    server_.set_responder(answer_after(60s));
    TestClient client(server_.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const int32_t refused = client.push();
    ASSERT_TRUE(server_.wait_for_requests(1, patience));
    server_.send_goaway("Shutdown", xaps::test::GoawayStreams::refuse);

    ASSERT_TRUE(client.run_until([&] { return client.response(refused).closed; }, patience));
    ASSERT_TRUE(client.goaway_received());
    EXPECT_EQ(client.goaway().last_stream_id, 0);
    EXPECT_EQ(client.response(refused).status, 0);
    EXPECT_EQ(client.response(refused).error_code, NGHTTP2_REFUSED_STREAM);
    EXPECT_TRUE(server_.wait_for_open_connections(0, patience));
}

TEST(MockApnsServerConfig, UnusableCertificateThrows) {
    MockApnsConfig config = apple_like_mock_config();
    config.key_file = test_pki_file("client.key"); // does not match server.pem
    EXPECT_THROW(MockApnsServer server(config), std::exception);
}

// Token auth: the mock reads Apple's rules independently of the worker's JWT
// code; the tokens here are made with it (provider-token.h).
class MockApnsTokenAuthTest : public ::testing::Test {
protected:
    static constexpr const char *key_id = "ABC123DEFG";
    static constexpr const char *team_id = "DEF123GHIJ";
    static constexpr const char *topic = "com.apple.mail.XServer.7a3e0c55";

    void SetUp() override {
        char pattern[] = "/tmp/test-mock-token-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr);
        dir_ = pattern;
        key_ = make_key_pem();
        public_key_file_ = dir_ + "/public.pem";
        std::ofstream(public_key_file_) << public_pem_of(key_);
        MockApnsConfig config;
        config.cert_file = test_pki_file("server.pem");
        config.key_file = test_pki_file("server.key");
        config.token_auth.emplace();
        config.token_auth->key_file = public_key_file_;
        config.token_auth->key_id = key_id;
        config.token_auth->team_id = team_id;
        config.token_auth->topics = {"com.example.mail", topic};
        server_ = std::make_unique<MockApnsServer>(config);
        server_->start();
    }
    void TearDown() override {
        server_.reset();
        std::filesystem::remove_all(dir_);
    }

    static std::string make_key_pem() {
        return xaps::test::private_key_pem(xaps::test::make_ec_key().get());
    }
    static std::string public_pem_of(const std::string &private_pem) {
        return xaps::test::public_key_pem(
            xaps::ProviderKey::from_pem(private_pem, "test key").native());
    }
    static int64_t now_seconds() {
        return std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
    }
    std::string token(int64_t issued_at, const std::string &kid = key_id,
                      const std::string &iss = team_id) const {
        return xaps::make_provider_token(xaps::ProviderKey::from_pem(key_, "test key"), kid, iss,
                                         issued_at);
    }

    // POSTs one push to `topic` with these extra headers (with token auth
    // apns-topic is required); returns status and reason.
    std::pair<int, std::string>
    push(TestClient &client, const std::vector<std::pair<std::string, std::string>> &headers) {
        std::vector<std::pair<std::string, std::string>> all = headers;
        if (std::none_of(all.begin(), all.end(),
                         [](const auto &header) { return header.first == "apns-topic"; }))
            all.emplace_back("apns-topic", topic);
        const int32_t stream = client.push(push_headers(all));
        if (!client.run_until([&] { return client.response(stream).closed; }, patience))
            return {0, "no answer"};
        Json::Value body;
        std::string reason;
        if (parse_json(client.response(stream).body, body))
            reason = body["reason"].asString();
        return {client.response(stream).status, reason};
    }
    std::pair<int, std::string> push_with(TestClient &client, const std::string &jwt) {
        return push(client, {{"authorization", "bearer " + jwt}});
    }

    std::string dir_;
    std::string key_;
    std::string public_key_file_;
    std::unique_ptr<MockApnsServer> server_;
};

TEST_F(MockApnsTokenAuthTest, ChecksEveryTokenLikeApns) {
    const int64_t now = now_seconds();
    const std::string valid = token(now - 60);
    const size_t last_dot = valid.rfind('.');
    const size_t first_dot = valid.find('.');
    std::string tampered = valid;
    tampered[first_dot + 2] = tampered[first_dot + 2] == 'A' ? 'B' : 'A';
    const std::string hs256 =
        xaps::base64url_encode(R"({"alg":"HS256","kid":"ABC123DEFG"})") + valid.substr(first_dot);
    const std::string other_key = xaps::make_provider_token(
        xaps::ProviderKey::from_pem(make_key_pem(), "other key"), key_id, team_id, now - 60);
    struct Row {
        const char *name;
        std::vector<std::pair<std::string, std::string>> headers;
        int status;
        std::string reason;
    };
    const std::vector<Row> rows = {
        {"no token", {}, 403, "MissingProviderToken"},
        {"not bearer", {{"authorization", "Basic " + valid}}, 403, "InvalidProviderToken"},
        {"not a JWT", {{"authorization", "bearer abc"}}, 403, "InvalidProviderToken"},
        {"wrong kid",
         {{"authorization", "bearer " + token(now - 60, "XYZ")}},
         403,
         "InvalidProviderToken"},
        {"wrong team",
         {{"authorization", "bearer " + token(now - 60, key_id, "XYZ")}},
         403,
         "InvalidProviderToken"},
        {"claims changed after signing",
         {{"authorization", "bearer " + tampered}},
         403,
         "InvalidProviderToken"},
        {"signed by another key",
         {{"authorization", "bearer " + other_key}},
         403,
         "InvalidProviderToken"},
        {"DER signature",
         {{"authorization", "bearer " + valid.substr(0, last_dot + 1) + "MEUCIQ"}},
         403,
         "InvalidProviderToken"},
        {"alg HS256", {{"authorization", "bearer " + hs256}}, 403, "InvalidProviderToken"},
        {"issued in the future",
         {{"authorization", "bearer " + token(now + 120)}},
         403,
         "InvalidProviderToken"},
        {"older than an hour",
         {{"authorization", "bearer " + token(now - 3700)}},
         403,
         "ExpiredProviderToken"},
        {"valid", {{"authorization", "bearer " + valid}}, 200, ""},
        {"valid, Bearer", {{"authorization", "Bearer " + valid}}, 200, ""},
    };
    TestClient client(server_->port(), std::nullopt);
    ASSERT_TRUE(client.connect());
    server_->set_responder([](const MockApnsRequest &) -> MockApnsResponse {
        throw std::runtime_error("the responder only sees accepted tokens");
    });
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        const auto [status, reason] = push(client, row.headers);
        EXPECT_EQ(status, row.status == 200 ? 500 : row.status);
        EXPECT_EQ(reason, row.status == 200 ? "InternalServerError" : row.reason);
    }
    const std::vector<MockApnsRequest> requests = server_->requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests.back().provider_token, valid);
    EXPECT_EQ(requests.back().token_issued_at, now - 60);
    const std::vector<MockApnsRequest> refused = server_->refused_requests();
    ASSERT_EQ(refused.size(), rows.size() - 2) << "refused requests are recorded apart";
    EXPECT_EQ(refused.front().provider_token, "");
    EXPECT_EQ(refused.front().refused_reason, "MissingProviderToken");
}

TEST_F(MockApnsTokenAuthTest, TheTopicMustBeOneOfTheTeams) {
    TestClient client(server_->port(), std::nullopt);
    ASSERT_TRUE(client.connect());
    const std::string bearer = "bearer " + token(now_seconds() - 60);
    struct Row {
        const char *name;
        std::vector<std::pair<std::string, std::string>> headers;
        std::pair<int, std::string> answer;
    };
    const std::vector<Row> rows = {
        {"the team's topic", {{"authorization", bearer}}, {200, ""}},
        {"another of its topics",
         {{"authorization", bearer}, {"apns-topic", "com.example.mail"}},
         {200, ""}},
        {"a topic of another team",
         {{"authorization", bearer}, {"apns-topic", "com.apple.mail.XServer.other"}},
         {400, "TopicDisallowed"}},
    };
    for (const Row &row : rows) {
        SCOPED_TRACE(row.name);
        EXPECT_EQ(push(client, row.headers), row.answer);
    }
    // push() always adds a topic: without one, the header list is built here.
    const int32_t stream = client.push(push_headers({{"authorization", bearer}}));
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    EXPECT_EQ(client.response(stream).status, 400);
    Json::Value body;
    ASSERT_TRUE(parse_json(client.response(stream).body, body));
    EXPECT_EQ(body["reason"].asString(), "MissingTopic");
}

TEST_F(MockApnsTokenAuthTest, ExpiresTokensOnRequestAndLimitsRenewals) {
    const int64_t now = now_seconds();
    TestClient client(server_->port(), std::nullopt);
    ASSERT_TRUE(client.connect());
    const std::string first = token(now - 50 * 60);
    EXPECT_EQ(push_with(client, first), std::make_pair(200, std::string()));

    server_->expire_provider_tokens();
    EXPECT_EQ(push_with(client, first), std::make_pair(403, std::string("ExpiredProviderToken")));
    EXPECT_EQ(push_with(client, token(now - 50 * 60)),
              std::make_pair(403, std::string("ExpiredProviderToken")))
        << "issued no later than the expired one";
    EXPECT_EQ(push_with(client, token(now - 40 * 60)),
              std::make_pair(429, std::string("TooManyProviderTokenUpdates")))
        << "10 minutes after the token in use";
    const std::string second = token(now - 30 * 60);
    EXPECT_EQ(push_with(client, second), std::make_pair(200, std::string()));
    EXPECT_EQ(push_with(client, second), std::make_pair(200, std::string()));
    EXPECT_EQ(push_with(client, token(now - 29 * 60)),
              std::make_pair(429, std::string("TooManyProviderTokenUpdates")));
}

TEST_F(MockApnsTokenAuthTest, CertificateAuthStillPassesWithoutAToken) {
    MockApnsConfig config;
    config.cert_file = test_pki_file("server.pem");
    config.key_file = test_pki_file("server.key");
    config.client_ca_file = test_pki_file("ca.pem");
    config.token_auth.emplace();
    config.token_auth->key_file = public_key_file_;
    config.token_auth->key_id = key_id;
    config.token_auth->team_id = team_id;
    MockApnsServer server(config);
    server.start();
    TestClient client(server.port(), trusted_client);
    ASSERT_TRUE(client.connect());
    const int32_t stream = client.push(push_headers({{"apns-topic", test_pki_topic()}}));
    ASSERT_TRUE(client.run_until([&] { return client.response(stream).closed; }, patience));
    EXPECT_EQ(client.response(stream).status, 200);
}

TEST(MockApnsServerConfig, UnusableTokenKeyThrows) {
    MockApnsConfig config;
    config.cert_file = test_pki_file("server.pem");
    config.key_file = test_pki_file("server.key");
    config.token_auth.emplace();
    config.token_auth->key_file = test_pki_file("server.key"); // RSA, not EC
    EXPECT_THROW(MockApnsServer server(config), std::exception);
}

} // namespace
