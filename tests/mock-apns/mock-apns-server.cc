#include "mock-apns-server.h"

#include "xaps-error.h"

#include <json/json.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

namespace xaps::test {

namespace {

constexpr std::string_view device_path_prefix = "/3/device/";
// Apple's device tokens are 32 bytes today; Apple warns they may grow, and
// the product accepts up to 100 bytes.
constexpr size_t min_device_token_digits = 64;
constexpr size_t max_device_token_digits = 200;
constexpr size_t max_payload = 4096; // for every push type but voip
constexpr size_t max_collapse_id = 64;
constexpr size_t max_request_body = 1024 * 1024;
constexpr size_t output_chunk = 64 * 1024;

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    UniqueFd &operator=(UniqueFd &&other) noexcept {
        reset(std::exchange(other.fd_, -1));
        return *this;
    }
    ~UniqueFd() { reset(); }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void reset(int fd = -1) {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

struct SslCtxFree {
    void operator()(SSL_CTX *ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
    void operator()(SSL *ssl) const { SSL_free(ssl); }
};
struct SessionFree {
    void operator()(nghttp2_session *session) const { nghttp2_session_del(session); }
};
struct CallbacksFree {
    void operator()(nghttp2_session_callbacks *callbacks) const {
        nghttp2_session_callbacks_del(callbacks);
    }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;
using SessionPtr = std::unique_ptr<nghttp2_session, SessionFree>;
using CallbacksPtr = std::unique_ptr<nghttp2_session_callbacks, CallbacksFree>;

// Drains this thread's OpenSSL error queue into one line.
std::string openssl_errors() {
    std::string text;
    while (unsigned long code = ERR_get_error()) {
        std::array<char, 256> buffer{};
        ERR_error_string_n(code, buffer.data(), buffer.size());
        if (!text.empty())
            text += "; ";
        text += buffer.data();
    }
    return text.empty() ? "unknown OpenSSL error" : text;
}

std::string random_uuid() {
    std::array<unsigned char, 16> bytes{};
    if (RAND_bytes(bytes.data(), bytes.size()) != 1)
        throw Error(ErrorKind::internal, "RAND_bytes failed: " + openssl_errors());
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    std::array<char, 37> text{};
    std::snprintf(text.data(), text.size(),
                  "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X", bytes[0],
                  bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
                  bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]);
    return text.data();
}

// The reasons APNs documents for each status, used when a test names none.
std::string default_reason(int status) {
    switch (status) {
    case 400:
        return "BadDeviceToken";
    case 403:
        return "BadCertificate";
    case 404:
        return "BadPath";
    case 405:
        return "MethodNotAllowed";
    case 410:
        return "Unregistered";
    case 413:
        return "PayloadTooLarge";
    case 429:
        return "TooManyProviderTokenUpdates";
    case 503:
        return "ServiceUnavailable";
    default:
        return "InternalServerError";
    }
}

std::string compact_json(const Json::Value &value) {
    Json::StreamWriterBuilder builder;
    builder["indentation"] = "";
    return Json::writeString(builder, value);
}

std::string error_body(const MockApnsResponse &response) {
    Json::Value body(Json::objectValue);
    body["reason"] = response.reason.empty() ? default_reason(response.status) : response.reason;
    if (response.status == 410) {
        const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
        body["timestamp"] = Json::Int64(response.timestamp_ms.value_or(now_ms));
    }
    return compact_json(body);
}

std::string device_token_of(const std::string &path) {
    if (path.size() <= device_path_prefix.size() || !path.starts_with(device_path_prefix))
        return {};
    std::string token = path.substr(device_path_prefix.size());
    return token.find('/') == std::string::npos ? token : std::string();
}

bool is_hex(std::string_view text) {
    return std::all_of(text.begin(), text.end(),
                       [](unsigned char c) { return std::isxdigit(c) != 0; });
}

bool is_decimal(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(),
                                        [](unsigned char c) { return c >= '0' && c <= '9'; });
}

// Apple: "a canonical UUID", 8-4-4-4-12 hex digits, either case.
bool is_uuid(std::string_view text) {
    if (text.size() != 36)
        return false;
    for (size_t i = 0; i < text.size(); ++i) {
        const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_position ? text[i] != '-'
                          : std::isxdigit(static_cast<unsigned char>(text[i])) == 0)
            return false;
    }
    return true;
}

// The apns-push-type values Apple documents.
bool is_push_type(std::string_view type) {
    static constexpr std::array<std::string_view, 11> types = {
        "alert",        "background", "controls",     "location",   "voip",   "complication",
        "fileprovider", "mdm",        "liveactivity", "pushtotalk", "widgets"};
    return std::find(types.begin(), types.end(), type) != types.end();
}

bool is_json_object(const std::string &text) {
    const std::unique_ptr<Json::CharReader> reader(Json::CharReaderBuilder().newCharReader());
    Json::Value root;
    return reader->parse(text.data(), text.data() + text.size(), &root, nullptr) && root.isObject();
}

const std::string *header_of(const MockApnsRequest &request, const std::string &name) {
    const auto found = request.headers.find(name);
    return found == request.headers.end() ? nullptr : &found->second;
}

MockApnsResponse refusal(int status, std::string reason) {
    MockApnsResponse response;
    response.status = status;
    response.reason = std::move(reason);
    return response;
}

// What APNs says to a request before it looks at who sent it.
std::optional<MockApnsResponse> refuse_request_line(const MockApnsRequest &request) {
    if (request.method != "POST")
        return refusal(405, "MethodNotAllowed");
    if (request.path == device_path_prefix)
        return refusal(400, "MissingDeviceToken");
    if (request.device_token.empty())
        return refusal(404, "BadPath");
    return std::nullopt;
}

// What APNs says to an authenticated request; topic_refusal gives the
// reason the credential may not push to a topic, if any.
std::optional<MockApnsResponse>
refuse_push(const MockApnsRequest &request, bool topic_required,
            const std::function<std::optional<std::string>(const std::string &)> &topic_refusal) {
    const std::string &token = request.device_token;
    if (token.size() < min_device_token_digits || token.size() > max_device_token_digits ||
        token.size() % 2 != 0 || !is_hex(token))
        return refusal(400, "BadDeviceToken");
    if (const std::string *topic = header_of(request, "apns-topic")) {
        if (std::optional<std::string> reason = topic_refusal(*topic))
            return refusal(400, std::move(*reason));
    } else if (topic_required) {
        return refusal(400, "MissingTopic");
    }
    if (const std::string *id = header_of(request, "apns-id"); id != nullptr && !is_uuid(*id))
        return refusal(400, "BadMessageId");
    if (const std::string *expiration = header_of(request, "apns-expiration");
        expiration != nullptr && !is_decimal(*expiration))
        return refusal(400, "BadExpirationDate");
    if (const std::string *priority = header_of(request, "apns-priority");
        priority != nullptr && *priority != "10" && *priority != "5" && *priority != "1")
        return refusal(400, "BadPriority");
    // Apple documents the header as required on watchOS only and says it may
    // drop an iOS push without it; a refusal makes the omission visible.
    const std::string *push_type = header_of(request, "apns-push-type");
    if (push_type == nullptr || !is_push_type(*push_type))
        return refusal(400, "InvalidPushType");
    if (const std::string *collapse_id = header_of(request, "apns-collapse-id");
        collapse_id != nullptr && collapse_id->size() > max_collapse_id)
        return refusal(400, "BadCollapseId");
    if (request.body.empty())
        return refusal(400, "PayloadEmpty");
    if (request.body.size() > max_payload)
        return refusal(413, "PayloadTooLarge");
    // Apple documents no reason for a body that is not a JSON object;
    // PayloadEmpty is the documented one that says "no usable payload".
    if (!is_json_object(request.body))
        return refusal(400, "PayloadEmpty");
    return std::nullopt;
}

// What iOS Mail reads of a push: aps.account-id and aps.m.
void decode_mail_push(MockApnsRequest &request) {
    Json::CharReaderBuilder builder;
    const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value root;
    std::string errors;
    const std::string &body = request.body;
    if (!reader->parse(body.data(), body.data() + body.size(), &root, &errors) ||
        !root.isObject() || !root["aps"].isObject())
        return;
    const Json::Value &aps = root["aps"];
    if (aps["account-id"].isString())
        request.account_id = aps["account-id"].asString();
    if (!aps.isMember("m"))
        return;
    request.mailbox_hashes.emplace();
    request.mailbox_hashes_valid = aps["m"].isArray();
    if (!request.mailbox_hashes_valid)
        return;
    for (const Json::Value &entry : aps["m"]) {
        if (!entry.isString()) {
            request.mailbox_hashes_valid = false;
            continue;
        }
        request.mailbox_hashes->push_back(entry.asString());
    }
}

int select_h2(SSL *, const unsigned char **out, unsigned char *out_length, const unsigned char *in,
              unsigned int in_length, void *) noexcept {
    static constexpr unsigned char server_protocols[] = {2, 'h', '2'};
    unsigned char *selected = nullptr;
    if (SSL_select_next_proto(&selected, out_length, server_protocols, sizeof server_protocols, in,
                              in_length) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; // APNs speaks HTTP/2 only
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

SslCtxPtr make_server_context(const MockApnsConfig &config) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx)
        throw Error(ErrorKind::internal, "SSL_CTX_new: " + openssl_errors());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), config.cert_file.c_str()) != 1)
        throw Error(ErrorKind::config,
                    "mock APNs certificate " + config.cert_file + ": " + openssl_errors());
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), config.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1)
        throw Error(ErrorKind::config,
                    "mock APNs key " + config.key_file + ": " + openssl_errors());
    if (!config.client_ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), config.client_ca_file.c_str(), nullptr) != 1)
            throw Error(ErrorKind::config,
                        "mock APNs client CA " + config.client_ca_file + ": " + openssl_errors());
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(config.client_ca_file.c_str());
        if (names != nullptr)
            SSL_CTX_set_client_CA_list(ctx.get(), names);
        SSL_CTX_set_verify(ctx.get(),
                           config.accept_anonymous_clients
                               ? SSL_VERIFY_PEER
                               : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           nullptr);
    }
    SSL_CTX_set_alpn_select_cb(ctx.get(), select_h2, nullptr);
    return ctx;
}

// What a connection needs from its server; called on the server thread.
class ConnectionOwner {
public:
    // May fill in what it learns about the request (the provider token).
    virtual MockApnsResponse on_request(MockApnsRequest &request) = 0;
    virtual void on_handshake_failure() = 0;
    virtual void on_ping() = 0;
    virtual void on_connection_closed() = 0;
    virtual uint32_t max_streams() const = 0;

protected:
    ~ConnectionOwner() = default;
};

class MockApnsConnection;

} // namespace

class MockApnsServer::Impl final : public ConnectionOwner {
public:
    explicit Impl(MockApnsConfig config)
        : config_(std::move(config)), ssl_ctx_(make_server_context(config_)),
          max_streams_(config_.max_concurrent_streams), port_(config_.port) {
        if (config_.token_auth)
            token_verifier_ = std::make_unique<ProviderTokenVerifier>(*config_.token_auth);
    }
    ~Impl();

    void start();
    void stop();
    uint16_t port() const { return port_.load(); }

    std::vector<MockApnsRequest> requests() const {
        std::lock_guard lock(mutex_);
        return requests_;
    }
    std::vector<MockApnsRequest> refused_requests() const {
        std::lock_guard lock(mutex_);
        return refused_;
    }
    void clear_requests() {
        std::lock_guard lock(mutex_);
        requests_.clear();
        refused_.clear();
        requests_received_ = 0;
        requests_refused_ = 0;
    }
    size_t requests_received() const {
        std::lock_guard lock(mutex_);
        return requests_received_;
    }
    size_t requests_refused() const {
        std::lock_guard lock(mutex_);
        return requests_refused_;
    }
    bool wait_for_requests(size_t count, std::chrono::milliseconds timeout) const {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [&] { return requests_received_ >= count; });
    }
    void set_responder(Responder responder) {
        std::lock_guard lock(mutex_);
        responder_ = std::move(responder);
    }
    void send_goaway(const std::string &reason, GoawayStreams streams);
    void set_max_concurrent_streams(uint32_t max_streams);
    void drop_connections();
    void expire_provider_tokens() {
        std::lock_guard lock(mutex_);
        if (token_verifier_)
            token_verifier_->expire_tokens_seen();
    }

    size_t connections_accepted() const { return accepted_.load(); }
    size_t handshake_failures() const { return handshake_failures_.load(); }
    size_t pings_received() const { return pings_.load(); }
    size_t open_connections() const {
        std::lock_guard lock(mutex_);
        return open_;
    }
    bool wait_for_open_connections(size_t count, std::chrono::milliseconds timeout) const {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [&] { return open_ == count; });
    }

    MockApnsResponse on_request(MockApnsRequest &request) override;
    void on_handshake_failure() override { ++handshake_failures_; }
    void on_ping() override { ++pings_; }
    void on_connection_closed() override {
        std::lock_guard lock(mutex_);
        --open_;
        changed_.notify_all();
    }
    uint32_t max_streams() const override { return max_streams_.load(); }

private:
    // APNs' refusal of the request, if any; fills in the provider token.
    // Called with mutex_ held.
    std::optional<MockApnsResponse> refuse(MockApnsRequest &request);
    void run() noexcept;
    void poll_once();
    void accept_connections();
    void run_commands();
    void wake() const;
    // Runs action on the server thread and waits for it; no-op when stopped.
    void run_on_server_thread(const std::function<void()> &action);

    const MockApnsConfig config_;
    SslCtxPtr ssl_ctx_;
    std::atomic<uint32_t> max_streams_;
    std::atomic<size_t> accepted_{0};
    std::atomic<size_t> handshake_failures_{0};
    std::atomic<size_t> pings_{0};

    mutable std::mutex mutex_; // guards the members below
    mutable std::condition_variable changed_;
    std::vector<MockApnsRequest> requests_;
    std::vector<MockApnsRequest> refused_;
    size_t requests_received_ = 0;
    size_t requests_refused_ = 0;
    size_t open_ = 0;
    Responder responder_;
    std::unique_ptr<ProviderTokenVerifier> token_verifier_;

    std::mutex lifecycle_mutex_; // serializes start() and stop()
    std::atomic<uint16_t> port_;
    std::thread thread_;
    UniqueFd listen_fd_;
    UniqueFd wake_read_;
    UniqueFd wake_write_;

    std::mutex commands_mutex_; // guards the members below
    std::vector<std::function<void()>> commands_;
    bool accepting_commands_ = false;
    bool stop_requested_ = false;

    // Server thread only.
    std::vector<std::unique_ptr<MockApnsConnection>> connections_;
};

namespace {

// One accepted TCP connection: the TLS handshake, then an HTTP/2 server session.
class MockApnsConnection {
public:
    MockApnsConnection(ConnectionOwner &server, UniqueFd fd, SslPtr ssl, size_t index)
        : server_(server), fd_(std::move(fd)), ssl_(std::move(ssl)), index_(index) {}
    ~MockApnsConnection() { close(false); }
    MockApnsConnection(const MockApnsConnection &) = delete;
    MockApnsConnection &operator=(const MockApnsConnection &) = delete;

    int fd() const { return fd_.get(); }
    bool closed() const { return !fd_; }
    short poll_events() const { return POLLIN | (want_write_ ? POLLOUT : 0); }

    void on_ready(short revents) {
        if (closed())
            return;
        if ((revents & (POLLERR | POLLNVAL)) != 0) {
            fail();
            return;
        }
        if (!session_) {
            continue_handshake();
            if (!session_)
                return;
        }
        read_input();
        pump();
    }

    std::optional<std::chrono::steady_clock::time_point> next_due() const {
        if (closed() || delayed_.empty())
            return std::nullopt;
        return delayed_.begin()->first;
    }

    void answer_due(std::chrono::steady_clock::time_point now) {
        bool answered = false;
        while (!closed() && !delayed_.empty() && delayed_.begin()->first <= now) {
            auto [stream_id, response] = delayed_.begin()->second;
            delayed_.erase(delayed_.begin());
            submit_response(stream_id, response);
            answered = true;
        }
        if (answered)
            pump();
    }

    void send_goaway(const std::string &reason, GoawayStreams streams) {
        if (closed())
            return;
        if (!session_) {
            close(false);
            return;
        }
        Json::Value debug(Json::objectValue);
        debug["reason"] = reason;
        const std::string data = compact_json(debug);
        const bool refuse = streams == GoawayStreams::refuse;
        const int32_t last_stream_id =
            refuse ? 0 : nghttp2_session_get_last_proc_stream_id(session_.get());
        nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE, last_stream_id, NGHTTP2_NO_ERROR,
                              reinterpret_cast<const uint8_t *>(data.data()), data.size());
        if (refuse) {
            delayed_.clear();
            for (const auto &[stream_id, stream] : streams_)
                nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, stream_id,
                                          NGHTTP2_REFUSED_STREAM);
        }
        pump();
    }

    void send_max_streams(uint32_t max_streams) {
        if (closed() || !session_)
            return;
        const nghttp2_settings_entry entry{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams};
        nghttp2_submit_settings(session_.get(), NGHTTP2_FLAG_NONE, &entry, 1);
        pump();
    }

    // Closes with a TCP RST: no close_notify, no GOAWAY.
    void abort() {
        if (closed())
            return;
        const linger no_linger{1, 0};
        ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
        close(false);
    }

private:
    struct Stream {
        MockApnsRequest request;
        std::string response_body;
        size_t response_offset = 0;
    };

    void fail() {
        if (!session_)
            server_.on_handshake_failure();
        close(false);
    }

    void close(bool graceful) {
        if (closed())
            return;
        if (graceful)
            SSL_shutdown(ssl_.get()); // best effort close_notify; the socket is non-blocking
        fd_.reset();
        delayed_.clear();
        server_.on_connection_closed();
    }

    void continue_handshake() {
        ERR_clear_error();
        const int result = SSL_do_handshake(ssl_.get());
        if (result == 1) {
            want_write_ = false;
            remember_client_subject();
            start_session();
            return;
        }
        switch (SSL_get_error(ssl_.get(), result)) {
        case SSL_ERROR_WANT_READ:
            want_write_ = false;
            return;
        case SSL_ERROR_WANT_WRITE:
            want_write_ = true;
            return;
        default:
            ERR_clear_error();
            fail();
        }
    }

    void remember_client_subject() {
        X509 *peer = SSL_get0_peer_certificate(ssl_.get());
        if (peer == nullptr)
            return;
        X509_NAME *subject = X509_get_subject_name(peer);
        if (char *line = X509_NAME_oneline(subject, nullptr, 0)) {
            client_subject_ = line;
            OPENSSL_free(line);
        }
        const int position = X509_NAME_get_index_by_NID(subject, NID_userId, -1);
        if (position < 0)
            return;
        ASN1_STRING *value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, position));
        unsigned char *utf8 = nullptr;
        const int length = ASN1_STRING_to_UTF8(&utf8, value);
        if (length >= 0) {
            client_uid_.assign(reinterpret_cast<char *>(utf8), static_cast<size_t>(length));
            OPENSSL_free(utf8);
        }
    }

    void start_session() {
        nghttp2_session_callbacks *raw_callbacks = nullptr;
        if (nghttp2_session_callbacks_new(&raw_callbacks) != 0)
            throw std::bad_alloc();
        CallbacksPtr callbacks(raw_callbacks);
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks.get(), on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(callbacks.get(), on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks.get(), on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks.get(), on_frame);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks.get(), on_stream_close);
        nghttp2_session *raw_session = nullptr;
        if (nghttp2_session_server_new(&raw_session, callbacks.get(), this) != 0)
            throw std::bad_alloc();
        session_.reset(raw_session);
        const nghttp2_settings_entry entry{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                           server_.max_streams()};
        nghttp2_submit_settings(session_.get(), NGHTTP2_FLAG_NONE, &entry, 1);
    }

    void read_input() {
        std::array<uint8_t, 16384> buffer{};
        while (!closed()) {
            ERR_clear_error();
            const int length = SSL_read(ssl_.get(), buffer.data(), buffer.size());
            if (length > 0) {
                if (nghttp2_session_mem_recv(session_.get(), buffer.data(),
                                             static_cast<size_t>(length)) < 0)
                    close(false);
                continue;
            }
            switch (SSL_get_error(ssl_.get(), length)) {
            case SSL_ERROR_WANT_READ:
                return;
            case SSL_ERROR_WANT_WRITE:
                want_write_ = true;
                return;
            default: // EOF, reset or a TLS alert
                ERR_clear_error();
                close(false);
                return;
            }
        }
    }

    // Moves nghttp2's output to TLS until either has nothing more to give.
    void pump() {
        while (!closed()) {
            if (output_offset_ == output_.size()) {
                output_.clear();
                output_offset_ = 0;
                while (output_.size() < output_chunk) {
                    const uint8_t *data = nullptr;
                    const ssize_t length = nghttp2_session_mem_send(session_.get(), &data);
                    if (length < 0) {
                        close(false);
                        return;
                    }
                    if (length == 0)
                        break;
                    output_.append(reinterpret_cast<const char *>(data),
                                   static_cast<size_t>(length));
                }
                if (output_.empty())
                    break;
            }
            ERR_clear_error();
            const size_t pending = std::min<size_t>(output_.size() - output_offset_, INT_MAX);
            const int written =
                SSL_write(ssl_.get(), output_.data() + output_offset_, static_cast<int>(pending));
            if (written > 0) {
                output_offset_ += static_cast<size_t>(written);
                continue;
            }
            const int error = SSL_get_error(ssl_.get(), written);
            if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
                want_write_ = error == SSL_ERROR_WANT_WRITE;
                return;
            }
            ERR_clear_error();
            close(false);
            return;
        }
        if (closed())
            return;
        want_write_ = false;
        // Both sides are done after a GOAWAY: nothing more will be said here.
        if (nghttp2_session_want_read(session_.get()) == 0 &&
            nghttp2_session_want_write(session_.get()) == 0)
            close(true);
    }

    void complete_request(int32_t stream_id, Stream &stream) {
        MockApnsRequest &request = stream.request;
        request.method = request.headers[":method"];
        request.path = request.headers[":path"];
        request.device_token = device_token_of(request.path);
        decode_mail_push(request);
        request.client_subject = client_subject_;
        request.client_uid = client_uid_;
        request.received = std::chrono::steady_clock::now();
        request.connection_index = index_;
        request.stream_id = stream_id;
        MockApnsResponse response = server_.on_request(request);
        if (response.delay > std::chrono::milliseconds::zero())
            delayed_.emplace(request.received + response.delay,
                             std::make_pair(stream_id, std::move(response)));
        else
            submit_response(stream_id, response);
    }

    void submit_response(int32_t stream_id, const MockApnsResponse &response) {
        const auto found = streams_.find(stream_id);
        if (found == streams_.end())
            return; // the client reset the stream meanwhile
        Stream &stream = *found->second;
        const auto request_id = stream.request.headers.find("apns-id");
        const std::string apns_id =
            request_id != stream.request.headers.end() ? request_id->second : random_uuid();
        const std::string status = std::to_string(response.status);
        const std::string content_type = "application/json";
        std::vector<nghttp2_nv> headers{header(":status", status), header("apns-id", apns_id)};
        nghttp2_data_provider body_provider{};
        const nghttp2_data_provider *body = nullptr;
        if (response.status != 200) {
            stream.response_body = error_body(response);
            headers.push_back(header("content-type", content_type));
            body_provider.source.ptr = &stream;
            body_provider.read_callback = read_body;
            body = &body_provider;
        }
        nghttp2_submit_response(session_.get(), stream_id, headers.data(), headers.size(), body);
    }

    static nghttp2_nv header(std::string_view name, const std::string &value) {
        return nghttp2_nv{const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(name.data())),
                          const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(value.data())),
                          name.size(), value.size(), NGHTTP2_NV_FLAG_NONE};
    }

    Stream *find_stream(int32_t stream_id) {
        const auto found = streams_.find(stream_id);
        return found == streams_.end() ? nullptr : found->second.get();
    }

    // nghttp2 callbacks: nothing may throw through them.

    static MockApnsConnection &self(void *user_data) {
        return *static_cast<MockApnsConnection *>(user_data);
    }

    static int on_begin_headers(nghttp2_session *, const nghttp2_frame *frame,
                                void *user_data) noexcept {
        try {
            if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
                self(user_data).streams_[frame->hd.stream_id] = std::make_unique<Stream>();
            return 0;
        } catch (...) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }

    static int on_header(nghttp2_session *, const nghttp2_frame *frame, const uint8_t *name,
                         size_t name_length, const uint8_t *value, size_t value_length, uint8_t,
                         void *user_data) noexcept {
        try {
            if (Stream *stream = self(user_data).find_stream(frame->hd.stream_id))
                stream->request
                    .headers[std::string(reinterpret_cast<const char *>(name), name_length)] =
                    std::string(reinterpret_cast<const char *>(value), value_length);
            return 0;
        } catch (...) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }

    static int on_data_chunk(nghttp2_session *, uint8_t, int32_t stream_id, const uint8_t *data,
                             size_t length, void *user_data) noexcept {
        try {
            Stream *stream = self(user_data).find_stream(stream_id);
            if (stream != nullptr && stream->request.body.size() + length <= max_request_body)
                stream->request.body.append(reinterpret_cast<const char *>(data), length);
            return 0;
        } catch (...) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }

    static int on_frame(nghttp2_session *, const nghttp2_frame *frame, void *user_data) noexcept {
        try {
            MockApnsConnection &connection = self(user_data);
            if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) == 0)
                connection.server_.on_ping();
            const bool request_part =
                frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA;
            if (request_part && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
                if (Stream *stream = connection.find_stream(frame->hd.stream_id))
                    connection.complete_request(frame->hd.stream_id, *stream);
            }
            return 0;
        } catch (...) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }

    static int on_stream_close(nghttp2_session *, int32_t stream_id, uint32_t,
                               void *user_data) noexcept {
        try {
            self(user_data).streams_.erase(stream_id);
            return 0;
        } catch (...) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }

    static ssize_t read_body(nghttp2_session *, int32_t, uint8_t *buffer, size_t length,
                             uint32_t *data_flags, nghttp2_data_source *source, void *) noexcept {
        Stream &stream = *static_cast<Stream *>(source->ptr);
        const size_t count = std::min(length, stream.response_body.size() - stream.response_offset);
        std::memcpy(buffer, stream.response_body.data() + stream.response_offset, count);
        stream.response_offset += count;
        if (stream.response_offset == stream.response_body.size())
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(count);
    }

    ConnectionOwner &server_;
    UniqueFd fd_;
    SslPtr ssl_;
    const size_t index_;
    bool want_write_ = false;
    std::string client_subject_;
    std::string client_uid_;
    std::string output_;
    size_t output_offset_ = 0;
    std::map<int32_t, std::unique_ptr<Stream>> streams_;
    std::multimap<std::chrono::steady_clock::time_point, std::pair<int32_t, MockApnsResponse>>
        delayed_;
    SessionPtr session_; // last: its callbacks use the members above
};

} // namespace

MockApnsServer::Impl::~Impl() {
    stop();
}

std::optional<MockApnsResponse> MockApnsServer::Impl::refuse(MockApnsRequest &request) {
    if (std::optional<MockApnsResponse> refused = refuse_request_line(request))
        return refused;
    const auto authorization = request.headers.find("authorization");
    const bool has_authorization = authorization != request.headers.end();
    if (token_verifier_ && (has_authorization || request.client_subject.empty())) {
        const ProviderTokenVerifier::Verdict verdict = token_verifier_->check(
            has_authorization ? std::optional<std::string>(authorization->second) : std::nullopt,
            std::chrono::system_clock::now());
        request.provider_token = verdict.token;
        request.token_issued_at = verdict.issued_at;
        if (verdict.status != 200)
            return refusal(verdict.status, verdict.reason);
        const std::vector<std::string> &topics = config_.token_auth->topics;
        return refuse_push(request, true, [&](const std::string &topic) {
            return std::find(topics.begin(), topics.end(), topic) == topics.end()
                       ? std::optional<std::string>("TopicDisallowed")
                       : std::nullopt;
        });
    }
    if (request.client_subject.empty() && config_.accept_anonymous_clients)
        return refuse_push(request, true,
                           [](const std::string &) { return std::optional<std::string>(); });
    if (request.client_subject.empty())
        return refusal(403, "MissingProviderToken");
    // A certificate for one topic (Apple's mail certificates are) names it
    // as its UID: the header may be left out, and must match when present.
    // A certificate without a UID would serve several topics: the header is
    // required then, and the mock cannot tell which ones it allows.
    return refuse_push(request, request.client_uid.empty(), [&](const std::string &topic) {
        return !request.client_uid.empty() && topic != request.client_uid
                   ? std::optional<std::string>("BadTopic")
                   : std::nullopt;
    });
}

MockApnsResponse MockApnsServer::Impl::on_request(MockApnsRequest &request) {
    Responder responder;
    std::optional<MockApnsResponse> refused;
    {
        std::lock_guard lock(mutex_);
        refused = refuse(request);
        if (refused) {
            request.refused_status = refused->status;
            request.refused_reason = refused->reason;
            if (config_.record_requests)
                refused_.push_back(request);
            ++requests_refused_;
        } else {
            if (config_.record_requests)
                requests_.push_back(request);
            ++requests_received_;
        }
        responder = responder_;
    }
    changed_.notify_all();
    if (refused)
        return *refused;
    if (!responder)
        return MockApnsResponse{};
    try {
        return responder(request);
    } catch (...) {
        MockApnsResponse failure;
        failure.status = 500;
        failure.reason = "InternalServerError";
        return failure;
    }
}

void MockApnsServer::Impl::start() {
    std::lock_guard lock(lifecycle_mutex_);
    if (thread_.joinable())
        return;
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener)
        throw Error(ErrorKind::unavailable, std::string("socket: ") + std::strerror(errno));
    const int on = 1;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port_.load());
    if (::bind(listener.get(), reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
        ::listen(listener.get(), SOMAXCONN) != 0)
        throw Error(ErrorKind::unavailable,
                    "mock APNs cannot listen on 127.0.0.1:" + std::to_string(port_.load()) + ": " +
                        std::strerror(errno));
    socklen_t length = sizeof address;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr *>(&address), &length);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0)
        throw Error(ErrorKind::unavailable, std::string("pipe2: ") + std::strerror(errno));
    wake_read_.reset(pipe_fds[0]);
    wake_write_.reset(pipe_fds[1]);
    listen_fd_ = std::move(listener);
    port_ = ntohs(address.sin_port);
    {
        std::lock_guard commands_lock(commands_mutex_);
        accepting_commands_ = true;
        stop_requested_ = false;
    }
    thread_ = std::thread([this] { run(); });
}

void MockApnsServer::Impl::stop() {
    std::lock_guard lock(lifecycle_mutex_);
    if (!thread_.joinable())
        return;
    {
        std::lock_guard commands_lock(commands_mutex_);
        stop_requested_ = true;
    }
    wake();
    thread_.join();
    listen_fd_.reset();
    wake_read_.reset();
    wake_write_.reset();
}

void MockApnsServer::Impl::wake() const {
    const char byte = 1;
    // A full pipe already guarantees a wake-up.
    [[maybe_unused]] const ssize_t ignored = ::write(wake_write_.get(), &byte, 1);
}

void MockApnsServer::Impl::run_on_server_thread(const std::function<void()> &action) {
    if (std::this_thread::get_id() == thread_.get_id()) {
        action();
        return;
    }
    std::promise<void> done;
    std::future<void> finished = done.get_future();
    {
        std::lock_guard lock(commands_mutex_);
        if (!accepting_commands_)
            return;
        commands_.push_back([&] {
            action();
            done.set_value();
        });
    }
    wake();
    finished.wait();
}

void MockApnsServer::Impl::send_goaway(const std::string &reason, GoawayStreams streams) {
    run_on_server_thread([&] {
        for (const auto &connection : connections_)
            connection->send_goaway(reason, streams);
    });
}

void MockApnsServer::Impl::set_max_concurrent_streams(uint32_t max_streams) {
    max_streams_ = max_streams;
    run_on_server_thread([&] {
        for (const auto &connection : connections_)
            connection->send_max_streams(max_streams);
    });
}

void MockApnsServer::Impl::drop_connections() {
    run_on_server_thread([&] {
        for (const auto &connection : connections_)
            connection->abort();
    });
}

void MockApnsServer::Impl::run() noexcept {
    // Writing to a socket the peer closed must fail with EPIPE, not kill the test.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    for (;;) {
        {
            std::lock_guard lock(commands_mutex_);
            if (stop_requested_)
                break;
        }
        try {
            poll_once();
        } catch (const std::exception &error) {
            std::fprintf(stderr, "mock-apns: %s\n", error.what());
        }
    }
    connections_.clear();
    {
        std::lock_guard lock(commands_mutex_);
        accepting_commands_ = false;
    }
    run_commands(); // releases callers that queued a command meanwhile
}

void MockApnsServer::Impl::poll_once() {
    std::vector<pollfd> fds{{wake_read_.get(), POLLIN, 0}, {listen_fd_.get(), POLLIN, 0}};
    std::optional<std::chrono::steady_clock::time_point> next_due;
    for (const auto &connection : connections_) {
        fds.push_back({connection->fd(), connection->poll_events(), 0});
        if (const auto due = connection->next_due())
            next_due = next_due ? std::min(*next_due, *due) : *due;
    }
    int timeout_ms = -1;
    if (next_due) {
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
            *next_due - std::chrono::steady_clock::now());
        timeout_ms = static_cast<int>(std::clamp<int64_t>(wait.count(), 0, INT_MAX));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR)
        throw Error(ErrorKind::internal, std::string("poll: ") + std::strerror(errno));

    const size_t polled_connections = fds.size() - 2;
    if (fds[0].revents != 0) {
        std::array<char, 64> drain{};
        while (::read(wake_read_.get(), drain.data(), drain.size()) > 0) {
        }
        run_commands();
    }
    if ((fds[1].revents & POLLIN) != 0)
        accept_connections();
    for (size_t i = 0; i < polled_connections; ++i) {
        if (fds[i + 2].revents != 0)
            connections_[i]->on_ready(fds[i + 2].revents);
    }
    const auto now = std::chrono::steady_clock::now();
    for (const auto &connection : connections_)
        connection->answer_due(now);
    std::erase_if(connections_, [](const auto &connection) { return connection->closed(); });
}

void MockApnsServer::Impl::run_commands() {
    std::vector<std::function<void()>> commands;
    {
        std::lock_guard lock(commands_mutex_);
        commands.swap(commands_);
    }
    for (const auto &command : commands)
        command();
}

void MockApnsServer::Impl::accept_connections() {
    for (;;) {
        UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd)
            return; // EAGAIN, or an error that the next poll reports again
        const int on = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        SslPtr ssl(SSL_new(ssl_ctx_.get()));
        if (!ssl || SSL_set_fd(ssl.get(), fd.get()) != 1) {
            ERR_clear_error();
            continue;
        }
        SSL_set_accept_state(ssl.get());
        const size_t index = accepted_++;
        {
            std::lock_guard lock(mutex_);
            ++open_;
            changed_.notify_all();
        }
        connections_.push_back(
            std::make_unique<MockApnsConnection>(*this, std::move(fd), std::move(ssl), index));
    }
}

MockApnsServer::MockApnsServer(MockApnsConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}
MockApnsServer::~MockApnsServer() = default;

void MockApnsServer::start() {
    impl_->start();
}
void MockApnsServer::stop() {
    impl_->stop();
}
uint16_t MockApnsServer::port() const {
    return impl_->port();
}
std::vector<MockApnsRequest> MockApnsServer::requests() const {
    return impl_->requests();
}
std::vector<MockApnsRequest> MockApnsServer::refused_requests() const {
    return impl_->refused_requests();
}
size_t MockApnsServer::requests_refused() const {
    return impl_->requests_refused();
}
void MockApnsServer::clear_requests() {
    impl_->clear_requests();
}
size_t MockApnsServer::requests_received() const {
    return impl_->requests_received();
}
bool MockApnsServer::wait_for_requests(size_t count, std::chrono::milliseconds timeout) const {
    return impl_->wait_for_requests(count, timeout);
}
void MockApnsServer::set_responder(Responder responder) {
    impl_->set_responder(std::move(responder));
}
void MockApnsServer::send_goaway(const std::string &reason, GoawayStreams streams) {
    impl_->send_goaway(reason, streams);
}
void MockApnsServer::set_max_concurrent_streams(uint32_t max_streams) {
    impl_->set_max_concurrent_streams(max_streams);
}
void MockApnsServer::drop_connections() {
    impl_->drop_connections();
}
void MockApnsServer::expire_provider_tokens() {
    impl_->expire_provider_tokens();
}
size_t MockApnsServer::connections_accepted() const {
    return impl_->connections_accepted();
}
size_t MockApnsServer::handshake_failures() const {
    return impl_->handshake_failures();
}
size_t MockApnsServer::open_connections() const {
    return impl_->open_connections();
}
size_t MockApnsServer::pings_received() const {
    return impl_->pings_received();
}
bool MockApnsServer::wait_for_open_connections(size_t count,
                                               std::chrono::milliseconds timeout) const {
    return impl_->wait_for_open_connections(count, timeout);
}

} // namespace xaps::test
