// The PushSender that talks to Apple: keeps settings.connections long-lived
// HTTP/2 connections to APNs open (reconnecting with backoff, never in a tight
// loop), multiplexes pushes over them, retries what is transient (429, 500,
// 503, lost connections, GOAWAY) and reports each push once it is final.
// Authenticates with the TLS client certificate or, with token auth, a
// provider token on every request, renewed on schedule and when Apple says
// it expired.
#pragma once

#include "apns-connection.h"
#include "apns-payload.h"
#include "apns-settings.h"
#include "event-loop.h"
#include "provider-token.h"
#include "push-sender.h"
#include "tls-context.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace xaps {

class ApnsClient : public PushSender, private ApnsConnection::Observer {
public:
    // Certificate auth: tls holds the client certificate.
    ApnsClient(EventLoop &loop, ApnsSettings settings, TlsContext tls, LogSink log = {});
    // Token auth: every request carries token's authorization header, and
    // tls usually holds no client certificate. Throws Error(config) when tls
    // has no client certificate and token is nullopt.
    ApnsClient(EventLoop &loop, ApnsSettings settings, TlsContext tls,
               std::optional<ProviderToken> token, LogSink log = {});
    // Closes the connections. Pushes not final yet are dropped without
    // calling their `done`: their owner is going away too.
    ~ApnsClient() override;
    ApnsClient(const ApnsClient &) = delete;
    ApnsClient &operator=(const ApnsClient &) = delete;

    // Connects eagerly and stays connected. Pushes sent before start() wait.
    void start();
    void send(const Push &push, Done done) override;
    std::string unavailable_reason() const override;
    const std::string &topic() const noexcept { return tls_.topic(); }
    // For good, e.g. when the client certificate expired: closes the
    // connections, fails every push not final yet and every later one with
    // `reason`, and connects no more. Never calls `done` from within.
    void disable(std::string reason);
    bool disabled() const noexcept { return disabled_; }
    // Token auth: how old the token in use is; nullopt with certificate auth.
    std::optional<std::chrono::seconds> provider_token_age() const;

    struct Stats {
        // Transport only: outcomes are counted once, by whoever gets them
        // (PushScheduler's counters, the worker's xaps_push_finished event).
        std::uint64_t sent = 0;           // requests written to APNs (retries included)
        std::uint64_t retries = 0;        // requests sent again (429/5xx, lost connection)
        std::uint64_t reconnects = 0;     // connections opened after the first ones
        std::uint64_t token_renewals = 0; // provider tokens signed after 403 ExpiredProviderToken
        std::size_t queued = 0;           // waiting for a connection or a retry
        std::size_t in_flight = 0;        // sent, not answered yet
        bool connected = false;           // at least one connection takes requests
        unsigned connections_ready = 0;   // connections taking requests
    };
    Stats stats() const;

private:
    struct PendingPush;
    struct Slot {
        std::unique_ptr<ApnsConnection> connection;
        std::unique_ptr<EventLoop::Watch> reconnect_timer;
        unsigned failures = 0; // connection attempts failed in a row
        bool opened_before = false;
    };

    // ApnsConnection::Observer
    void on_capacity(ApnsConnection &connection) override;
    void on_response(ApnsConnection &connection, ApnsRequest &request) override;
    void on_unanswered(ApnsConnection &connection, ApnsRequest &request, bool refused) override;
    void on_goaway(ApnsConnection &connection, std::string_view reason) override;
    void on_closed(ApnsConnection &connection, std::string_view reason) override;

    bool retry_with_renewed_token(PendingPush &push);
    // At error once per token and kind of problem, at debug after that.
    void log_token_problem(std::string_view kind, std::string_view message);

    void open(Slot &slot);
    void schedule_reconnect(Slot &slot, bool healthy);
    Slot *slot_of(const ApnsConnection &connection);
    std::unique_ptr<ApnsConnection> take_connection(const ApnsConnection &connection);
    void bury(std::unique_ptr<ApnsConnection> connection);

    void dispatch();
    void retry_later(PendingPush &push);
    void on_retry_timer();
    void arm_retry_timer();
    void on_sweep();
    void arm_sweep();
    void finish(PendingPush &push, PushOutcome::Result result, int http_status,
                std::string_view reason,
                std::optional<std::int64_t> unregistered_at_ms = std::nullopt);
    // Final, from a later loop turn: for outcomes decided inside send().
    void finish_later(PendingPush &push, PushOutcome::Result result, std::string_view reason);
    void refresh_expiration();
    std::chrono::milliseconds backoff(std::chrono::milliseconds initial,
                                      std::chrono::milliseconds max, unsigned attempt);
    PendingPush &acquire();
    void release(PendingPush &push);
    void log(LogLevel level, std::string_view message) const noexcept;

    EventLoop &loop_;
    ApnsSettings settings_;
    TlsContext tls_;
    std::optional<ProviderToken> token_;
    LogSink log_;
    ApnsConnectionConfig connection_config_;
    ApnsPayloadWriter payload_;

    bool started_ = false;
    std::vector<Slot> slots_;
    std::vector<std::unique_ptr<ApnsConnection>> draining_;
    std::vector<std::unique_ptr<ApnsConnection>> graveyard_;
    std::unique_ptr<EventLoop::Watch> reap_timer_;
    std::size_t next_slot_ = 0;
    std::string last_connection_error_;
    bool queue_full_reported_ = false; // logged once per episode, not per push
    bool disabled_ = false;
    std::string disabled_reason_;
    // The provider token generation and kind of problem last logged at
    // error: once per token, not once per push.
    std::pair<std::uint64_t, std::string> token_problem_logged_;

    std::deque<PendingPush *> queue_;
    std::vector<PendingPush *> delayed_; // a min-heap on PendingPush::retry_at
    std::unique_ptr<EventLoop::Watch> retry_timer_;
    std::chrono::steady_clock::time_point retry_timer_at_;
    std::unique_ptr<EventLoop::Watch> sweep_timer_;
    // Posted callbacks hold it weakly: they must not run after the client.
    std::shared_ptr<char> alive_ = std::make_shared<char>();

    std::vector<std::unique_ptr<PendingPush>> pool_;
    std::vector<PendingPush *> free_;
    std::int64_t expiration_second_ = -1;
    std::string expiration_;
    std::minstd_rand random_;

    Stats stats_;
};

} // namespace xaps
