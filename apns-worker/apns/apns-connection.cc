#include "apns-connection.h"

#include "apns-payload.h"

#include "xaps-error.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace xaps {
namespace {

using std::chrono::milliseconds;

// Frames nghttp2 serializes wait here for SSL_write; past this much it waits
// for the socket instead of buffering more.
constexpr std::size_t output_high_water = 64 * 1024;
// APNs error bodies are a small JSON object; anything past this is not needed.
constexpr std::size_t max_response_body = 4096;
constexpr std::size_t max_goaway_reason = 256;
// While reading, answers are handed over and new requests written after
// every this many ended streams (see ApnsConnection::receive)...
constexpr std::size_t responses_per_flush = 16;
// ... checked after each slice of this many bytes of a read.
constexpr std::size_t receive_slice = 1024;

std::string openssl_error_text() {
    std::string text;
    while (unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof(buffer));
        if (text.empty())
            text = buffer;
    }
    return text;
}

std::string describe_tls_failure(SSL *ssl, int ssl_error, int saved_errno) {
    if (ssl != nullptr) {
        const long verify = SSL_get_verify_result(ssl);
        if (verify != X509_V_OK)
            return std::string("server certificate not trusted: ") +
                   X509_verify_cert_error_string(verify);
    }
    std::string text = openssl_error_text();
    if (!text.empty())
        return text;
    if (ssl_error == SSL_ERROR_SYSCALL)
        return saved_errno != 0 ? std::strerror(saved_errno) : "connection closed";
    return "TLS error " + std::to_string(ssl_error);
}

// A socket BIO writing with MSG_NOSIGNAL: a peer that went away must not
// raise SIGPIPE in a process that did not ignore it.
int socket_fd(BIO *bio) {
    return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio)));
}

int socket_bio_write(BIO *bio, const char *data, int length) noexcept {
    BIO_clear_retry_flags(bio);
    const ssize_t written =
        ::send(socket_fd(bio), data, static_cast<std::size_t>(length), MSG_NOSIGNAL);
    if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(bio);
    return static_cast<int>(written);
}

int socket_bio_read(BIO *bio, char *data, int length) noexcept {
    BIO_clear_retry_flags(bio);
    const ssize_t got = ::recv(socket_fd(bio), data, static_cast<std::size_t>(length), 0);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(bio);
    return static_cast<int>(got);
}

long socket_bio_ctrl(BIO *, int command, long, void *) noexcept {
    return command == BIO_CTRL_FLUSH ? 1 : 0;
}

int socket_bio_create(BIO *bio) noexcept {
    BIO_set_init(bio, 1);
    return 1;
}

BIO_METHOD *socket_bio_method() {
    static BIO_METHOD *const method = [] {
        BIO_METHOD *m =
            BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "xaps nosignal socket");
        if (m == nullptr)
            throw Error(ErrorKind::internal, "BIO_meth_new failed");
        BIO_meth_set_write(m, socket_bio_write);
        BIO_meth_set_read(m, socket_bio_read);
        BIO_meth_set_ctrl(m, socket_bio_ctrl);
        BIO_meth_set_create(m, socket_bio_create);
        return m;
    }();
    return method;
}

bool is_ip_address(const std::string &host) {
    unsigned char buffer[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
           ::inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

nghttp2_nv header(std::string_view name, std::string_view value) {
    // Names are lower-case literals and values outlive the stream (they live
    // in the config or the request): nghttp2 need not copy either.
    return nghttp2_nv{reinterpret_cast<std::uint8_t *>(const_cast<char *>(name.data())),
                      reinterpret_cast<std::uint8_t *>(const_cast<char *>(value.data())),
                      name.size(), value.size(),
                      NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

} // namespace

// The nghttp2 callbacks: file-local trampolines into the connection. Each
// member they call is noexcept and catches everything itself.
struct ApnsConnectionCallbacks {
    static ApnsConnection &of(void *user_data) { return *static_cast<ApnsConnection *>(user_data); }
    static ssize_t send(nghttp2_session *, const std::uint8_t *data, std::size_t length, int,
                        void *user_data) noexcept {
        return of(user_data).on_send(data, length);
    }
    static int frame_recv(nghttp2_session *, const nghttp2_frame *frame, void *user_data) noexcept {
        return of(user_data).on_frame_recv(*frame);
    }
    static int header(nghttp2_session *, const nghttp2_frame *frame, const std::uint8_t *name,
                      std::size_t name_length, const std::uint8_t *value, std::size_t value_length,
                      std::uint8_t, void *user_data) noexcept {
        return of(user_data).on_header(*frame, {reinterpret_cast<const char *>(name), name_length},
                                       {reinterpret_cast<const char *>(value), value_length});
    }
    static int data_chunk(nghttp2_session *, std::uint8_t, std::int32_t stream_id,
                          const std::uint8_t *data, std::size_t length, void *user_data) noexcept {
        return of(user_data).on_data_chunk(stream_id, data, length);
    }
    static int stream_close(nghttp2_session *, std::int32_t stream_id, std::uint32_t error_code,
                            void *user_data) noexcept {
        return of(user_data).on_stream_close(stream_id, error_code);
    }
    static ssize_t read_body(nghttp2_session *, std::int32_t, std::uint8_t *buffer,
                             std::size_t length, std::uint32_t *data_flags,
                             nghttp2_data_source *source, void *user_data) noexcept {
        return of(user_data).read_body(*static_cast<ApnsRequest *>(source->ptr), buffer, length,
                                       data_flags);
    }

    struct CallbacksFree {
        void operator()(nghttp2_session_callbacks *callbacks) const noexcept {
            nghttp2_session_callbacks_del(callbacks);
        }
    };
    // nghttp2 copies them into each session, so one set serves all.
    static const nghttp2_session_callbacks *get() {
        static const std::unique_ptr<nghttp2_session_callbacks, CallbacksFree> callbacks = [] {
            nghttp2_session_callbacks *c = nullptr;
            if (nghttp2_session_callbacks_new(&c) != 0)
                throw Error(ErrorKind::internal, "nghttp2_session_callbacks_new failed");
            nghttp2_session_callbacks_set_send_callback(c, send);
            nghttp2_session_callbacks_set_on_frame_recv_callback(c, frame_recv);
            nghttp2_session_callbacks_set_on_header_callback(c, header);
            nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, data_chunk);
            nghttp2_session_callbacks_set_on_stream_close_callback(c, stream_close);
            return std::unique_ptr<nghttp2_session_callbacks, CallbacksFree>(c);
        }();
        return callbacks.get();
    }
};

ApnsConnection::ApnsConnection(EventLoop &loop, SSL_CTX *tls, ApnsConnectionConfig config,
                               Observer &observer)
    : loop_(loop), tls_(tls), config_(std::move(config)), observer_(observer) {
    authority_ =
        config_.host.find(':') != std::string::npos ? "[" + config_.host + "]" : config_.host;
    if (config_.port != 443)
        authority_ += ":" + std::to_string(config_.port);
}

ApnsConnection::~ApnsConnection() {
    resolution_.reset();
    read_watch_.reset();
    write_watch_.reset();
    connect_timer_.reset();
    tick_timer_.reset();
    session_.reset();
    ssl_.reset();
    if (fd_ >= 0)
        ::close(fd_);
}

std::string ApnsConnection::description() const {
    return config_.host + ":" + std::to_string(config_.port);
}

void ApnsConnection::connect() {
    if (state_ != State::idle)
        throw Error(ErrorKind::internal, "ApnsConnection::connect called twice");
    state_ = State::connecting;
    connect_timer_ = loop_.call_after(config_.connect_timeout, [this] {
        close("no HTTP/2 session with " + description() + " within " +
              std::to_string(config_.connect_timeout.count()) + " ms");
    });
    // Deferred so that even an immediate failure reaches the observer from the loop.
    tick_timer_ = loop_.call_after(milliseconds{0}, [this] { start_connect(); });
}

void ApnsConnection::start_connect() noexcept {
    try {
        resolution_ = std::make_unique<AddressResolution>(
            loop_, config_.host, config_.port,
            [this](AddressResolution::Addresses addresses, std::string error) {
                on_resolved(std::move(addresses), std::move(error));
            },
            config_.lookup);
    } catch (const std::exception &error) {
        close(error.what());
    }
}

void ApnsConnection::on_resolved(AddressResolution::Addresses addresses,
                                 std::string error) noexcept {
    // Destroys the resolution whose callback this is: only locals from here on.
    std::unique_ptr<AddressResolution> finished = std::move(resolution_);
    if (!error.empty()) {
        close(error);
        return;
    }
    try {
        addresses_ = std::move(addresses);
        try_next_address();
    } catch (const std::exception &failure) {
        close(failure.what());
    }
}

void ApnsConnection::try_next_address() {
    while (next_address_ < addresses_.size()) {
        const std::vector<std::uint8_t> &address = addresses_[next_address_++];
        const auto *sockaddr_ptr = reinterpret_cast<const sockaddr *>(address.data());
        fd_ = ::socket(sockaddr_ptr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            last_connect_error_ = std::strerror(errno);
            continue;
        }
        const int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (::connect(fd_, sockaddr_ptr, static_cast<socklen_t>(address.size())) == 0) {
            start_tls();
            return;
        }
        if (errno == EINPROGRESS) {
            watch(false, true);
            return;
        }
        last_connect_error_ = std::strerror(errno);
        ::close(fd_);
        fd_ = -1;
    }
    close("cannot connect to " + description() + ": " + last_connect_error_);
}

void ApnsConnection::on_connect_ready() {
    int error = 0;
    socklen_t length = sizeof(error);
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) < 0)
        error = errno;
    if (error == 0) {
        start_tls();
        return;
    }
    last_connect_error_ = std::strerror(error);
    watch(false, false);
    ::close(fd_);
    fd_ = -1;
    try_next_address();
}

void ApnsConnection::start_tls() {
    state_ = State::handshaking;
    ssl_.reset(SSL_new(tls_));
    if (!ssl_)
        throw Error(ErrorKind::internal, "SSL_new: " + openssl_error_text());
    BIO *bio = BIO_new(socket_bio_method());
    if (bio == nullptr)
        throw Error(ErrorKind::internal, "BIO_new: " + openssl_error_text());
    BIO_set_data(bio, reinterpret_cast<void *>(static_cast<std::intptr_t>(fd_)));
    SSL_set_bio(ssl_.get(), bio, bio);
    if (is_ip_address(config_.host)) {
        // No SNI with an address (RFC 6066); check the certificate's IP SAN.
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), config_.host.c_str());
    } else {
        SSL_set_tlsext_host_name(ssl_.get(), config_.host.c_str());
        SSL_set1_host(ssl_.get(), config_.host.c_str());
    }
    SSL_set_connect_state(ssl_.get());
    continue_handshake();
}

void ApnsConnection::continue_handshake() {
    ERR_clear_error();
    errno = 0;
    const int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) {
        const unsigned char *protocol = nullptr;
        unsigned int protocol_length = 0;
        SSL_get0_alpn_selected(ssl_.get(), &protocol, &protocol_length);
        if (std::string_view(reinterpret_cast<const char *>(protocol), protocol_length) != "h2") {
            close(description() + " did not agree to HTTP/2 (ALPN h2)");
            return;
        }
        start_session();
        return;
    }
    const int saved_errno = errno;
    const int error = SSL_get_error(ssl_.get(), rc);
    if (error == SSL_ERROR_WANT_READ)
        watch(true, false);
    else if (error == SSL_ERROR_WANT_WRITE)
        watch(false, true);
    else
        close("TLS handshake with " + description() +
              " failed: " + describe_tls_failure(ssl_.get(), error, saved_errno));
}

void ApnsConnection::start_session() {
    nghttp2_session *session = nullptr;
    const int rc = nghttp2_session_client_new(&session, ApnsConnectionCallbacks::get(), this);
    if (rc != 0)
        throw Error(ErrorKind::internal,
                    std::string("nghttp2_session_client_new: ") + nghttp2_strerror(rc));
    session_.reset(session);
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
    state_ = State::open;
    last_received_ = loop_.now();
    arm_tick();
    after_io();
}

bool ApnsConnection::ready() const noexcept {
    return state_ == State::open && settings_received_ && !goaway_received_ && !draining_ &&
           fatal_error_.empty();
}

std::size_t ApnsConnection::capacity() const noexcept {
    if (!ready())
        return 0;
    const std::uint32_t server_limit = nghttp2_session_get_remote_settings(
        session_.get(), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    const std::size_t limit = std::min(server_limit, config_.max_streams);
    return limit > in_flight_count_ ? limit - in_flight_count_ : 0;
}

bool ApnsConnection::submit(ApnsRequest &request) noexcept {
    if (!ready())
        return false;
    request.status = 0;
    request.apns_id.clear();
    request.response_body.clear();
    request.body_sent = 0;

    nghttp2_nv headers[10];
    std::size_t count = 0;
    headers[count++] = header(":method", "POST");
    headers[count++] = header(":scheme", "https");
    headers[count++] = header(":authority", authority_);
    headers[count++] = header(":path", request.path);
    headers[count++] = header("apns-topic", config_.topic);
    headers[count++] = header("apns-push-type", config_.push_type);
    headers[count++] = header("apns-expiration", request.expiration);
    if (!config_.priority.empty())
        headers[count++] = header("apns-priority", config_.priority);
    if (!request.authorization.empty())
        headers[count++] = header("authorization", request.authorization);

    nghttp2_data_provider body{};
    body.source.ptr = &request;
    body.read_callback = ApnsConnectionCallbacks::read_body;
    const std::int32_t stream_id =
        nghttp2_submit_request(session_.get(), nullptr, headers, count, &body, &request);
    if (stream_id < 0) {
        // Out of stream ids (or memory): let this session end, a new one takes over.
        drain();
        return false;
    }
    request.stream_id = stream_id;
    request.submitted_at = loop_.now();
    link_in_flight(request);
    // An idle connection sends at once: nothing to batch with, and a round
    // through the event loop would cost a poll. During a burst the write
    // watch batches the requests into few TLS records and syscalls instead.
    // A failure here is acted on from the next I/O event or tick.
    if (in_flight_count_ == 1 && !write_watch_ && output_sent_ == output_.size()) {
        try {
            flush();
        } catch (...) {
            fatal_error_ = "out of memory";
        }
    }
    if (!write_watch_)
        update_watches();
    return true;
}

void ApnsConnection::drain() noexcept {
    draining_ = true;
    if (in_flight_count_ == 0 && state_ == State::open) {
        try {
            tick_timer_ = loop_.call_after(milliseconds{0}, [this] { close("drained"); });
        } catch (...) {
            // The next tick or I/O event closes it instead.
        }
    }
}

void ApnsConnection::link_in_flight(ApnsRequest &request) noexcept {
    request.previous_in_flight = last_in_flight_;
    request.next_in_flight = nullptr;
    if (last_in_flight_ != nullptr)
        last_in_flight_->next_in_flight = &request;
    else
        first_in_flight_ = &request;
    last_in_flight_ = &request;
    in_flight_count_++;
}

void ApnsConnection::unlink_in_flight(ApnsRequest &request) noexcept {
    if (request.previous_in_flight != nullptr)
        request.previous_in_flight->next_in_flight = request.next_in_flight;
    else
        first_in_flight_ = request.next_in_flight;
    if (request.next_in_flight != nullptr)
        request.next_in_flight->previous_in_flight = request.previous_in_flight;
    else
        last_in_flight_ = request.previous_in_flight;
    request.previous_in_flight = request.next_in_flight = nullptr;
    in_flight_count_--;
}

void ApnsConnection::watch(bool read, bool write) {
    if (read && !read_watch_) {
        read_watch_ = loop_.watch_fd(fd_, EventLoop::IoDirection::read, [this] { on_readable(); });
    } else if (!read) {
        read_watch_.reset();
    }
    if (write && !write_watch_) {
        write_watch_ =
            loop_.watch_fd(fd_, EventLoop::IoDirection::write, [this] { on_writable(); });
    } else if (!write) {
        write_watch_.reset();
    }
}

void ApnsConnection::update_watches() {
    if (state_ != State::open)
        return;
    const bool want_write = output_sent_ < output_.size() || tls_read_wants_write_ ||
                            nghttp2_session_want_write(session_.get()) != 0;
    watch(true, want_write);
}

void ApnsConnection::on_readable() {
    try {
        if (state_ == State::handshaking) {
            continue_handshake();
        } else if (state_ == State::open) {
            read_tls();
            after_io();
        }
    } catch (const std::exception &error) {
        close(error.what());
    }
}

void ApnsConnection::on_writable() {
    try {
        if (state_ == State::connecting) {
            on_connect_ready();
        } else if (state_ == State::handshaking) {
            continue_handshake();
        } else if (state_ == State::open) {
            if (tls_read_wants_write_)
                read_tls();
            after_io();
        }
    } catch (const std::exception &error) {
        close(error.what());
    }
}

void ApnsConnection::read_tls() {
    tls_read_wants_write_ = false;
    while (fatal_error_.empty()) {
        ERR_clear_error();
        errno = 0;
        std::size_t got = 0;
        const int rc = SSL_read_ex(ssl_.get(), input_.data(), input_.size(), &got);
        if (rc == 1) {
            if (!receive(got))
                return; // closed by an observer
            // Nothing buffered: the level-triggered read watch says when more
            // arrives, which spares a recv() that would only return EAGAIN.
            if (SSL_has_pending(ssl_.get()) == 0)
                return;
            continue;
        }
        const int saved_errno = errno;
        const int error = SSL_get_error(ssl_.get(), rc);
        if (error == SSL_ERROR_WANT_READ)
            return;
        if (error == SSL_ERROR_WANT_WRITE) {
            tls_read_wants_write_ = true;
            return;
        }
        if (error == SSL_ERROR_ZERO_RETURN)
            fatal_error_ = "closed by " + description();
        else
            fatal_error_ = "connection to " + description() +
                           " lost: " + describe_tls_failure(nullptr, error, saved_errno);
    }
}

// Feeds `got` bytes of input_ to nghttp2 in slices. Whenever enough
// streams ended, their answers go to the observer (which submits queued
// pushes onto the freed streams) and the new requests are written at once,
// while the rest of the read waits: the server gets work again after a few
// answers instead of after the whole batch. Returns false when an observer
// closed the connection.
bool ApnsConnection::receive(std::size_t got) {
    // A write that fails here must not cut the read short: what follows may
    // be the server's GOAWAY (see read_after_write_error()).
    std::string write_error;
    for (std::size_t offset = 0; offset < got && fatal_error_.empty();) {
        const std::size_t slice = std::min(receive_slice, got - offset);
        const ssize_t used =
            nghttp2_session_mem_recv(session_.get(), input_.data() + offset, slice);
        if (used < 0) {
            fatal_error_ =
                std::string("HTTP/2 protocol error: ") + nghttp2_strerror(static_cast<int>(used));
            break;
        }
        offset += slice;
        if (ended_.size() >= responses_per_flush && delivering_.empty()) {
            deliver_events();
            if (state_ != State::open)
                return false;
            if (!write_failed_) {
                flush();
                if (write_failed_)
                    write_error = std::exchange(fatal_error_, std::string());
            }
        }
    }
    if (!write_error.empty() && fatal_error_.empty())
        fatal_error_ = std::move(write_error);
    return true;
}

void ApnsConnection::flush() {
    while (state_ == State::open && fatal_error_.empty()) {
        if (output_sent_ < output_.size()) {
            ERR_clear_error();
            errno = 0;
            std::size_t written = 0;
            const int rc = SSL_write_ex(ssl_.get(), output_.data() + output_sent_,
                                        output_.size() - output_sent_, &written);
            if (rc == 1) {
                output_sent_ += written;
                if (output_sent_ == output_.size()) {
                    output_.clear();
                    output_sent_ = 0;
                }
                continue;
            }
            const int saved_errno = errno;
            const int error = SSL_get_error(ssl_.get(), rc);
            if (error != SSL_ERROR_WANT_WRITE && error != SSL_ERROR_WANT_READ) {
                fatal_error_ = "connection to " + description() +
                               " lost: " + describe_tls_failure(nullptr, error, saved_errno);
                write_failed_ = true;
            }
            return;
        }
        if (nghttp2_session_want_write(session_.get()) == 0)
            return;
        const int rc = nghttp2_session_send(session_.get());
        if (rc != 0) {
            fatal_error_ = std::string("HTTP/2 error: ") + nghttp2_strerror(rc);
            return;
        }
        if (output_.empty())
            return;
    }
}

// A server that sends GOAWAY and closes at once makes our next write fail
// (EPIPE, reset) while its GOAWAY, which refused every stream above its last
// stream id, may still wait unread. Found by the GOAWAY storm test
// (tests/unit/test-apns-faults.cc): without reading it, those streams count
// as lost, not refused, and a push caught like that max_resends + 1 times
// fails although Apple never processed it. Read what already arrived first.
void ApnsConnection::read_after_write_error() {
    write_failed_ = false;
    std::string write_error = std::move(fatal_error_);
    fatal_error_.clear();
    read_tls();
    if (fatal_error_.empty() || !goaway_received_)
        fatal_error_ = std::move(write_error);
    deliver_events();
}

void ApnsConnection::after_io() {
    deliver_events();
    if (fatal_error_.empty()) {
        flush();
        // Streams nghttp2 could not start end while sending; observers may
        // have submitted more, which the write watch sends next.
        deliver_events();
    }
    if (state_ != State::open)
        return;
    if (write_failed_)
        read_after_write_error();
    if (!fatal_error_.empty()) {
        close(fatal_error_);
        return;
    }
    if (nghttp2_session_want_read(session_.get()) == 0 &&
        nghttp2_session_want_write(session_.get()) == 0 && output_sent_ == output_.size()) {
        close(goaway_received_ ? "GOAWAY from " + description() + ": " + goaway_reason_
                               : "HTTP/2 session with " + description() + " ended");
        return;
    }
    if (draining_ && in_flight_count_ == 0) {
        close("drained");
        return;
    }
    update_watches();
}

void ApnsConnection::deliver_events() {
    if (!delivering_.empty())
        return; // already delivering further up the stack
    if (connect_timer_ && settings_received_)
        connect_timer_.reset();
    if (goaway_received_ && !goaway_reported_) {
        goaway_reported_ = true;
        observer_.on_goaway(*this, goaway_reason_);
    }
    while (!ended_.empty()) {
        std::swap(ended_, delivering_);
        for (const StreamEnd &end : delivering_) {
            if (end.request->status != 0) {
                responses_++;
                observer_.on_response(*this, *end.request);
            } else {
                observer_.on_unanswered(*this, *end.request,
                                        end.error_code == NGHTTP2_REFUSED_STREAM);
            }
        }
        delivering_.clear();
    }
    if (capacity_changed_) {
        capacity_changed_ = false;
        if (capacity() > 0)
            observer_.on_capacity(*this);
    }
}

void ApnsConnection::arm_tick() {
    const milliseconds shortest =
        std::min({config_.ping_interval, config_.ping_timeout, config_.request_timeout});
    const milliseconds period = std::clamp(shortest / 4, milliseconds{5}, milliseconds{1000});
    tick_timer_ = loop_.call_after(period, [this] { on_tick(); });
}

void ApnsConnection::on_tick() {
    try {
        if (state_ != State::open)
            return;
        const auto now = loop_.now();
        if (ping_outstanding_ && now - ping_sent_at_ >= config_.ping_timeout) {
            close("no answer to PING from " + description() + " within " +
                  std::to_string(config_.ping_timeout.count()) + " ms");
            return;
        }
        if (!ping_outstanding_ && now - last_received_ >= config_.ping_interval) {
            nghttp2_submit_ping(session_.get(), NGHTTP2_FLAG_NONE, nullptr);
            ping_sent_at_ = now;
            ping_outstanding_ = true;
        }
        // The list is in submission order: only its head can be overdue first.
        for (ApnsRequest *request = first_in_flight_;
             request != nullptr && now - request->submitted_at >= config_.request_timeout;
             request = request->next_in_flight) {
            nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, request->stream_id,
                                      NGHTTP2_CANCEL);
        }
        arm_tick();
        after_io();
    } catch (const std::exception &error) {
        close(error.what());
    }
}

void ApnsConnection::close(std::string_view reason) noexcept {
    if (state_ == State::closed)
        return;
    const bool was_open = state_ == State::open;
    state_ = State::closed;                // not ready() any more: nobody submits here now
    const std::string reason_copy(reason); // reason may live in a member reset below
    resolution_.reset();
    read_watch_.reset();
    write_watch_.reset();
    connect_timer_.reset();
    tick_timer_.reset();
    try {
        if (was_open)
            deliver_events(); // answers that arrived before the end count
        session_.reset();
        ssl_.reset();
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
        while (first_in_flight_ != nullptr) {
            ApnsRequest &request = *first_in_flight_;
            unlink_in_flight(request);
            observer_.on_unanswered(*this, request, false);
        }
        observer_.on_closed(*this, reason_copy);
    } catch (...) {
        // Observers do not throw; nothing more to do for one that did.
    }
}

ssize_t ApnsConnection::on_send(const std::uint8_t *data, std::size_t length) noexcept {
    try {
        if (output_.size() - output_sent_ >= output_high_water)
            return NGHTTP2_ERR_WOULDBLOCK;
        output_.append(reinterpret_cast<const char *>(data), length);
        return static_cast<ssize_t>(length);
    } catch (...) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
}

int ApnsConnection::on_frame_recv(const nghttp2_frame &frame) noexcept {
    try {
        last_received_ = loop_.now();
        switch (frame.hd.type) {
        case NGHTTP2_SETTINGS:
            if ((frame.hd.flags & NGHTTP2_FLAG_ACK) == 0) {
                settings_received_ = true;
                capacity_changed_ = true;
            }
            break;
        case NGHTTP2_PING:
            if ((frame.hd.flags & NGHTTP2_FLAG_ACK) != 0)
                ping_outstanding_ = false;
            break;
        case NGHTTP2_GOAWAY: {
            goaway_received_ = true;
            goaway_reported_ = false;
            const std::string_view debug(reinterpret_cast<const char *>(frame.goaway.opaque_data),
                                         std::min(frame.goaway.opaque_data_len, max_goaway_reason));
            goaway_reason_ = nghttp2_http2_strerror(frame.goaway.error_code);
            goaway_reason_ += ", last stream " + std::to_string(frame.goaway.last_stream_id);
            if (!debug.empty())
                goaway_reason_.append(", ").append(debug);
            break;
        }
        default:
            break;
        }
        return 0;
    } catch (...) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
}

int ApnsConnection::on_header(const nghttp2_frame &frame, std::string_view name,
                              std::string_view value) noexcept {
    try {
        if (frame.hd.type != NGHTTP2_HEADERS)
            return 0;
        auto *request = static_cast<ApnsRequest *>(
            nghttp2_session_get_stream_user_data(session_.get(), frame.hd.stream_id));
        if (request == nullptr)
            return 0;
        if (!read_apns_response_header(name, value, request->status, request->apns_id))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; // resets just this stream
        return 0;
    } catch (...) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
}

int ApnsConnection::on_data_chunk(std::int32_t stream_id, const std::uint8_t *data,
                                  std::size_t length) noexcept {
    try {
        auto *request = static_cast<ApnsRequest *>(
            nghttp2_session_get_stream_user_data(session_.get(), stream_id));
        if (request == nullptr)
            return 0;
        const std::size_t room =
            max_response_body - std::min(max_response_body, request->response_body.size());
        request->response_body.append(reinterpret_cast<const char *>(data), std::min(room, length));
        return 0;
    } catch (...) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
}

int ApnsConnection::on_stream_close(std::int32_t stream_id, std::uint32_t error_code) noexcept {
    try {
        auto *request = static_cast<ApnsRequest *>(
            nghttp2_session_get_stream_user_data(session_.get(), stream_id));
        if (request == nullptr)
            return 0;
        unlink_in_flight(*request);
        capacity_changed_ = true;
        ended_.push_back(StreamEnd{request, error_code});
        return 0;
    } catch (...) {
        fatal_error_ = "out of memory";
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
}

ssize_t ApnsConnection::read_body(ApnsRequest &request, std::uint8_t *buffer, std::size_t length,
                                  std::uint32_t *data_flags) noexcept {
    const std::size_t left = request.body.size() - request.body_sent;
    const std::size_t chunk = std::min(left, length);
    std::memcpy(buffer, request.body.data() + request.body_sent, chunk);
    request.body_sent += chunk;
    if (request.body_sent == request.body.size())
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(chunk);
}

} // namespace xaps
