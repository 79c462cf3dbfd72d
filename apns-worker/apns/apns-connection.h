// One HTTP/2 connection to APNs: non-blocking TCP connect, TLS (ALPN h2,
// server certificate and hostname verified), an nghttp2 client session over
// it, PING when idle. It carries requests (ApnsRequest) that its owner, the
// ApnsClient, keeps; it decides nothing about retries or queueing and tells
// its Observer what happened. Everything runs on the EventLoop.
#pragma once

#include "address-resolution.h"
#include "event-loop.h"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

namespace xaps {

// One request on the wire. Owned by the caller, who must keep it alive and
// unchanged from submit() until the Observer hands it back.
struct ApnsRequest {
    std::string path;       // "/3/device/<token>"
    std::string expiration; // apns-expiration: unix seconds
    std::string body;
    // The authorization header ("bearer <provider token>"); empty with
    // certificate auth.
    std::string authorization;

    // The answer, filled while the stream is open.
    int status = 0; // 0: no answer (yet)
    std::string apns_id;
    std::string response_body;

    // Bookkeeping of the connection carrying it.
    std::size_t body_sent = 0;
    std::int32_t stream_id = 0;
    std::chrono::steady_clock::time_point submitted_at;
    ApnsRequest *previous_in_flight = nullptr;
    ApnsRequest *next_in_flight = nullptr;
};

struct ApnsConnectionConfig {
    std::string host;
    std::uint16_t port{};
    std::string topic;     // apns-topic
    std::string push_type; // apns-push-type
    std::string priority;  // apns-priority; empty: not sent
    std::chrono::milliseconds connect_timeout{10000};
    std::chrono::milliseconds ping_interval{60000};
    std::chrono::milliseconds ping_timeout{15000};
    std::chrono::milliseconds request_timeout{30000};
    std::uint32_t max_streams = 1000;
    // How the host name is resolved, off the loop (tests replace it).
    AddressResolution::Lookup lookup = ::getaddrinfo;
};

class ApnsConnection {
public:
    // Called from the event loop, never from within connect()/submit(). An
    // observer may submit() from any of them, but must not destroy the
    // connection inside them.
    class Observer {
    public:
        virtual ~Observer() = default;
        // Ready to take requests, or room for more: handshake done, the
        // server's SETTINGS received, or streams finished / limit raised.
        virtual void on_capacity(ApnsConnection &connection) = 0;
        // Apple answered; request.status and response_body are set.
        virtual void on_response(ApnsConnection &connection, ApnsRequest &request) = 0;
        // The request's stream ended without an answer. `refused`: the server
        // did not process it (REFUSED_STREAM, above a GOAWAY's last stream id).
        virtual void on_unanswered(ApnsConnection &connection, ApnsRequest &request,
                                   bool refused) = 0;
        // The server sent GOAWAY: no new requests; the streams it took are
        // still answered, then the connection closes.
        virtual void on_goaway(ApnsConnection &connection, std::string_view reason) = 0;
        // The connection is dead; every request it carried was handed back
        // first. The last call the observer gets.
        virtual void on_closed(ApnsConnection &connection, std::string_view reason) = 0;
    };

    ApnsConnection(EventLoop &loop, SSL_CTX *tls, ApnsConnectionConfig config, Observer &observer);
    // Closes without telling the observer; requests in flight are dropped.
    ~ApnsConnection();
    ApnsConnection(const ApnsConnection &) = delete;
    ApnsConnection &operator=(const ApnsConnection &) = delete;

    // Starts connecting. Failures (name resolution included) are reported
    // later through on_closed().
    void connect();
    // Taking requests: connected, the server's SETTINGS seen, no GOAWAY.
    bool ready() const noexcept;
    // Streams that may still be opened now, following the server's
    // SETTINGS_MAX_CONCURRENT_STREAMS and our own cap.
    std::size_t capacity() const noexcept;
    std::size_t in_flight() const noexcept { return in_flight_count_; }
    // Answers received so far: a connection that got some was a working one.
    std::uint64_t responses() const noexcept { return responses_; }
    // Queues the request for sending (on the next write-ready event). Returns
    // false when this session cannot open another stream; the connection then
    // stops taking requests and closes once the ones in flight are answered.
    bool submit(ApnsRequest &request) noexcept;
    // Stop taking requests, close once the ones in flight are answered.
    void drain() noexcept;
    // Closes now; in-flight requests go back through on_unanswered, then on_closed.
    void close(std::string_view reason) noexcept;

    std::string description() const; // "host:port"

private:
    enum class State { idle, connecting, handshaking, open, closed };
    struct SslFree {
        void operator()(SSL *ssl) const noexcept { SSL_free(ssl); }
    };
    struct SessionFree {
        void operator()(nghttp2_session *session) const noexcept { nghttp2_session_del(session); }
    };
    struct StreamEnd {
        ApnsRequest *request;
        std::uint32_t error_code;
    };
    friend struct ApnsConnectionCallbacks;

    void start_connect() noexcept;
    void on_resolved(AddressResolution::Addresses addresses, std::string error) noexcept;
    void try_next_address();
    void on_connect_ready();
    void start_tls();
    void continue_handshake();
    void start_session();
    void on_readable();
    void on_writable();
    void on_tick();
    void read_tls();
    bool receive(std::size_t got);
    void flush();
    void read_after_write_error();
    void deliver_events();
    void after_io();
    void update_watches();
    void watch(bool read, bool write);
    void link_in_flight(ApnsRequest &request) noexcept;
    void unlink_in_flight(ApnsRequest &request) noexcept;
    void arm_tick();

    // nghttp2 callbacks, reached through ApnsConnectionCallbacks.
    ssize_t on_send(const std::uint8_t *data, std::size_t length) noexcept;
    int on_frame_recv(const nghttp2_frame &frame) noexcept;
    int on_header(const nghttp2_frame &frame, std::string_view name,
                  std::string_view value) noexcept;
    int on_data_chunk(std::int32_t stream_id, const std::uint8_t *data,
                      std::size_t length) noexcept;
    int on_stream_close(std::int32_t stream_id, std::uint32_t error_code) noexcept;
    ssize_t read_body(ApnsRequest &request, std::uint8_t *buffer, std::size_t length,
                      std::uint32_t *data_flags) noexcept;

    EventLoop &loop_;
    SSL_CTX *tls_;
    ApnsConnectionConfig config_;
    Observer &observer_;
    std::string authority_;

    State state_ = State::idle;
    int fd_ = -1;
    std::unique_ptr<AddressResolution> resolution_; // while the host name is looked up
    AddressResolution::Addresses addresses_;        // resolved sockaddrs, tried in order
    std::size_t next_address_ = 0;
    std::string last_connect_error_;
    std::unique_ptr<SSL, SslFree> ssl_;
    std::unique_ptr<nghttp2_session, SessionFree> session_;
    std::unique_ptr<EventLoop::Watch> read_watch_;
    std::unique_ptr<EventLoop::Watch> write_watch_;
    std::unique_ptr<EventLoop::Watch> connect_timer_;
    std::unique_ptr<EventLoop::Watch> tick_timer_;
    bool tls_read_wants_write_ = false;

    bool settings_received_ = false;
    bool goaway_received_ = false;
    bool draining_ = false;
    bool capacity_changed_ = false;
    bool goaway_reported_ = false;
    std::string goaway_reason_;
    std::string fatal_error_;   // set inside nghttp2 callbacks, acted on after them
    bool write_failed_ = false; // fatal_error_ came from a failed write

    ApnsRequest *first_in_flight_ = nullptr;
    ApnsRequest *last_in_flight_ = nullptr;
    std::size_t in_flight_count_ = 0;
    std::uint64_t responses_ = 0;
    std::vector<StreamEnd> ended_;      // filled by nghttp2 callbacks
    std::vector<StreamEnd> delivering_; // handed to the observer

    std::chrono::steady_clock::time_point last_received_;
    std::chrono::steady_clock::time_point ping_sent_at_;
    bool ping_outstanding_ = false;

    std::string output_; // serialized frames waiting for SSL_write
    std::size_t output_sent_ = 0;
    std::array<std::uint8_t, 16384> input_{};
};

} // namespace xaps
