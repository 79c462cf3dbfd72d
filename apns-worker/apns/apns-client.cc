#include "apns-client.h"

#include "registration-rules.h"
#include "xaps-assert.h"
#include "xaps-error.h"

#include <algorithm>
#include <charconv>

namespace xaps {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

struct ApnsClient::PendingPush : ApnsRequest {
    Push push;
    Done done;
    steady_clock::time_point deadline; // failed when not final by then
    steady_clock::time_point retry_at;
    unsigned retries = 0; // after 429/5xx
    unsigned resends = 0; // after its connection died unanswered
    int last_status = 0;
    std::string last_reason;
    std::uint64_t token_generation = 0; // of the provider token it was last sent with
    bool token_renewal_tried = false;   // resent once after ExpiredProviderToken
    // In free_: a flag, not a search of free_, which holds up to max_queued
    // entries (a search per push took 18% of the worker's CPU in bench-push).
    bool released = false;
};

namespace {

bool valid_device_token(std::string_view token) {
    return !std::holds_alternative<RuleBreach>(check_device_token(token));
}

bool retryable(int status) {
    return status == 429 || status == 500 || status == 503;
}

bool device_gone(int status, std::string_view reason) {
    return status == 410 ||
           (status == 400 && (reason == "BadDeviceToken" || reason == "DeviceTokenNotForTopic"));
}

// Orders the heap of delayed retries: the earliest on top.
constexpr auto retries_later = [](const auto *a, const auto *b) {
    return a->retry_at > b->retry_at;
};

std::string token_for_log(std::string_view token) {
    return std::string(token.substr(0, 8)) + (token.size() > 8 ? "..." : "");
}

} // namespace

ApnsClient::ApnsClient(EventLoop &loop, ApnsSettings settings, TlsContext tls, LogSink log)
    : ApnsClient(loop, std::move(settings), std::move(tls), std::nullopt, std::move(log)) {}

ApnsClient::ApnsClient(EventLoop &loop, ApnsSettings settings, TlsContext tls,
                       std::optional<ProviderToken> token, LogSink log)
    : loop_(loop), settings_(std::move(settings)), tls_(std::move(tls)), token_(std::move(token)),
      log_(std::move(log)), random_(std::random_device{}()) {
    if (!token_ && !tls_.has_client_certificate())
        throw Error(ErrorKind::config, "no APNs credential: neither a client certificate nor a "
                                       "provider token (xaps_apns_token_key_file)");
    if (settings_.host.empty())
        throw Error(ErrorKind::config, "no APNs host configured");
    if (settings_.push_type.empty())
        throw Error(ErrorKind::config, "empty apns-push-type");
    connection_config_.host = settings_.host;
    connection_config_.port = settings_.port;
    connection_config_.topic = tls_.topic();
    connection_config_.push_type = settings_.push_type;
    if (settings_.priority)
        connection_config_.priority = std::to_string(*settings_.priority);
    connection_config_.connect_timeout = settings_.connect_timeout;
    connection_config_.ping_interval = settings_.ping_interval;
    connection_config_.ping_timeout = settings_.ping_timeout;
    connection_config_.request_timeout = settings_.request_timeout;
    connection_config_.max_streams =
        std::max<std::uint32_t>(1, settings_.max_streams_per_connection);
    slots_.resize(std::max(1u, settings_.connections));
}

ApnsClient::~ApnsClient() {
    // Connections first: their destructors do not call back, and the
    // requests they reference live in pool_.
    for (Slot &slot : slots_) {
        slot.reconnect_timer.reset();
        slot.connection.reset();
    }
    draining_.clear();
    graveyard_.clear();
}

void ApnsClient::start() {
    if (started_ || disabled_)
        return;
    started_ = true;
    for (Slot &slot : slots_)
        open(slot);
}

void ApnsClient::send(const Push &push, Done done) {
    PendingPush &pending = acquire();
    // Assigned, not moved in: a recycled PendingPush keeps its strings' capacity.
    pending.push = push;
    pending.done = std::move(done);
    pending.retries = 0;
    pending.resends = 0;
    pending.last_status = 0;
    pending.last_reason.clear();
    pending.token_renewal_tried = false;
    pending.deadline = loop_.now() + settings_.give_up_after;
    if (disabled_) {
        finish_later(pending, PushOutcome::Result::failed, disabled_reason_);
        return;
    }
    if (!valid_device_token(pending.push.device_token)) {
        finish_later(pending, PushOutcome::Result::rejected, "invalid device token");
        return;
    }
    // The payload writer takes the id as a C string (registrations refuse
    // control characters, so only a caller bypassing the store gets here).
    if (pending.push.account_id.find('\0') != std::string::npos) {
        finish_later(pending, PushOutcome::Result::rejected, "invalid account id");
        return;
    }
    if (queue_.size() + delayed_.size() >= settings_.max_queued) {
        if (!queue_full_reported_) {
            queue_full_reported_ = true;
            log(LogLevel::warning,
                std::to_string(settings_.max_queued) +
                    " pushes wait for APNs already; failing new ones" +
                    (last_connection_error_.empty()
                         ? std::string()
                         : " (last connection error: " + last_connection_error_ + ")"));
        }
        finish_later(pending, PushOutcome::Result::failed, "too many pushes waiting for APNs");
        return;
    }
    if (queue_full_reported_ && queue_.size() + delayed_.size() < settings_.max_queued / 2)
        queue_full_reported_ = false;
    pending.path.assign("/3/device/").append(pending.push.device_token);
    payload_.write_mail_push(pending.push.account_id, pending.push.mailbox_hashes, pending.body);
    refresh_expiration();
    pending.expiration = expiration_;
    queue_.push_back(&pending);
    dispatch();
    if (!queue_.empty())
        arm_sweep();
}

std::string ApnsClient::unavailable_reason() const {
    if (disabled_)
        return disabled_reason_;
    // Still connecting for the first time, or again right after a working
    // connection closed: the push would most likely go out.
    const bool every_slot_failing =
        !slots_.empty() && std::all_of(slots_.begin(), slots_.end(), [](const Slot &slot) {
            return slot.failures > 0 && !(slot.connection && slot.connection->ready());
        });
    if (!every_slot_failing)
        return {};
    return "no working connection to APNs " + settings_.host + ":" +
           std::to_string(settings_.port) + " (last error: " + last_connection_error_ +
           "); retrying";
}

ApnsClient::Stats ApnsClient::stats() const {
    Stats stats = stats_;
    stats.queued = queue_.size() + delayed_.size();
    stats.in_flight = 0;
    for (const Slot &slot : slots_) {
        if (slot.connection) {
            stats.in_flight += slot.connection->in_flight();
            stats.connections_ready += slot.connection->ready() ? 1 : 0;
        }
    }
    for (const auto &connection : draining_)
        stats.in_flight += connection->in_flight();
    stats.connected = stats.connections_ready > 0;
    return stats;
}

// --- connections -----------------------------------------------------------

void ApnsClient::open(Slot &slot) {
    slot.reconnect_timer.reset();
    if (slot.opened_before)
        stats_.reconnects++;
    slot.opened_before = true;
    ApnsConnection::Observer &observer = *this;
    slot.connection =
        std::make_unique<ApnsConnection>(loop_, tls_.native(), connection_config_, observer);
    slot.connection->connect();
}

void ApnsClient::schedule_reconnect(Slot &slot, bool healthy) {
    // After a working connection, reconnect at once; after failures, back off
    // so that Apple never sees a connect loop.
    if (healthy)
        slot.failures = 0;
    const milliseconds delay = healthy ? milliseconds{0}
                                       : backoff(settings_.reconnect_initial_delay,
                                                 settings_.reconnect_max_delay, ++slot.failures);
    slot.reconnect_timer = loop_.call_after(delay, [this, &slot] { open(slot); });
}

ApnsClient::Slot *ApnsClient::slot_of(const ApnsConnection &connection) {
    for (Slot &slot : slots_) {
        if (slot.connection.get() == &connection)
            return &slot;
    }
    return nullptr;
}

std::unique_ptr<ApnsConnection> ApnsClient::take_connection(const ApnsConnection &connection) {
    if (Slot *slot = slot_of(connection))
        return std::move(slot->connection);
    for (auto it = draining_.begin(); it != draining_.end(); ++it) {
        if (it->get() == &connection) {
            std::unique_ptr<ApnsConnection> found = std::move(*it);
            draining_.erase(it);
            return found;
        }
    }
    return nullptr;
}

// A connection is destroyed from the loop, never inside its own callbacks.
void ApnsClient::bury(std::unique_ptr<ApnsConnection> connection) {
    if (!connection)
        return;
    graveyard_.push_back(std::move(connection));
    if (!reap_timer_) {
        reap_timer_ = loop_.call_after(milliseconds{0}, [this] {
            graveyard_.clear();
            reap_timer_.reset();
        });
    }
}

void ApnsClient::on_capacity(ApnsConnection &connection) {
    if (Slot *slot = slot_of(connection)) {
        if (slot->failures > 0) {
            log(LogLevel::info, "connected to APNs " + connection.description() + " after " +
                                    std::to_string(slot->failures) + " failed attempts");
            slot->failures = 0;
        }
    }
    dispatch();
}

void ApnsClient::on_goaway(ApnsConnection &connection, std::string_view reason) {
    Slot *slot = slot_of(connection);
    if (slot == nullptr)
        return; // already draining
    const bool healthy = connection.responses() > 0;
    log(healthy ? LogLevel::info : LogLevel::warning, "APNs " + connection.description() +
                                                          " sent GOAWAY (" + std::string(reason) +
                                                          "); moving to a new connection");
    draining_.push_back(std::move(slot->connection));
    schedule_reconnect(*slot, healthy);
}

void ApnsClient::on_closed(ApnsConnection &connection, std::string_view reason) {
    Slot *slot = slot_of(connection);
    std::unique_ptr<ApnsConnection> owned = take_connection(connection);
    if (disabled_) {
        bury(std::move(owned));
        return;
    }
    if (slot != nullptr) {
        const bool healthy = connection.responses() > 0;
        last_connection_error_ = reason;
        schedule_reconnect(*slot, healthy);
        if (healthy || slot->failures <= 1)
            log(LogLevel::warning, "APNs connection closed: " + std::string(reason));
        else
            log(LogLevel::debug, "APNs connection closed: " + std::string(reason) + " (failure " +
                                     std::to_string(slot->failures) + ")");
    } else {
        log(LogLevel::debug, "draining APNs connection closed: " + std::string(reason));
    }
    bury(std::move(owned));
    dispatch();
}

// --- pushes ----------------------------------------------------------------

void ApnsClient::dispatch() {
    if (disabled_ || queue_.empty())
        return;
    const std::string *authorization = nullptr;
    if (token_) {
        try {
            authorization = &token_->authorization();
        } catch (const std::exception &error) {
            // Pushes wait, and fail at their deadline if signing keeps failing.
            log_token_problem("sign",
                              std::string("cannot sign an APNs provider token: ") + error.what());
            return;
        }
    }
    const std::size_t slot_count = slots_.size();
    while (!queue_.empty()) {
        Slot *target = nullptr;
        for (std::size_t i = 0; i < slot_count; i++) {
            Slot &slot = slots_[(next_slot_ + i) % slot_count];
            if (slot.connection && slot.connection->capacity() > 0) {
                target = &slot;
                next_slot_ = (next_slot_ + i + 1) % slot_count;
                break;
            }
        }
        if (target == nullptr)
            return;
        PendingPush &pending = *queue_.front();
        if (authorization != nullptr) {
            pending.authorization.assign(*authorization);
            pending.token_generation = token_->generation();
        }
        if (!target->connection->submit(pending)) {
            // The session cannot open more streams (out of stream ids after a
            // long life): it drains while a new one takes over.
            const bool healthy = target->connection->responses() > 0;
            draining_.push_back(std::move(target->connection));
            schedule_reconnect(*target, healthy);
            continue;
        }
        queue_.pop_front();
        stats_.sent++;
    }
}

void ApnsClient::on_response(ApnsConnection &, ApnsRequest &request) {
    PendingPush &pending = static_cast<PendingPush &>(request);
    const int status = pending.status;
    if (status == 200) {
        finish(pending, PushOutcome::Result::delivered, status, {});
        return;
    }
    ApnsErrorBody error = parse_apns_error(pending.response_body);
    if (device_gone(status, error.reason)) {
        finish(pending, PushOutcome::Result::device_gone, status, error.reason,
               status == 410 ? error.timestamp_ms : std::nullopt);
        return;
    }
    if (retryable(status)) {
        pending.last_status = status;
        pending.last_reason = std::move(error.reason);
        retry_later(pending);
        return;
    }
    if (token_ && status == 403 && error.reason == "ExpiredProviderToken" &&
        retry_with_renewed_token(pending))
        return;
    if (token_ && status == 403 &&
        (error.reason == "InvalidProviderToken" || error.reason == "MissingProviderToken")) {
        log_token_problem("invalid", "APNs refused the provider token (" + error.reason +
                                         "): check that " + "xaps_apns_key_id (" +
                                         token_->key_id() + ") is the id of the key in " +
                                         settings_.token_key_file + " and xaps_apns_team_id (" +
                                         token_->team_id() + ") the team it belongs to");
        finish(pending, PushOutcome::Result::rejected, status, error.reason);
        return;
    }
    log(LogLevel::warning, "APNs rejected a push to " + token_for_log(pending.push.device_token) +
                               ": " + std::to_string(status) + " " + error.reason);
    finish(pending, PushOutcome::Result::rejected, status, error.reason);
}

void ApnsClient::on_unanswered(ApnsConnection &, ApnsRequest &request, bool refused) {
    PendingPush &pending = static_cast<PendingPush &>(request);
    if (disabled_) {
        finish_later(pending, PushOutcome::Result::failed, disabled_reason_);
        return;
    }
    // A refused stream was never processed: sending it again is always safe.
    if (!refused && ++pending.resends > settings_.max_resends) {
        finish(pending, PushOutcome::Result::failed, 0,
               "connection to APNs lost before it answered, " + std::to_string(pending.resends) +
                   " times");
        return;
    }
    if (loop_.now() >= pending.deadline) {
        finish(pending, PushOutcome::Result::failed, 0, "APNs did not answer in time");
        return;
    }
    stats_.retries++;
    queue_.push_front(&pending);
    dispatch();
    if (!queue_.empty())
        arm_sweep();
}

// 403 ExpiredProviderToken. Apple refuses a provider that signs tokens more
// often than every 20 minutes, so: a push sent with a token that was renewed
// since is simply resent; otherwise the token is renewed only when it is at
// least 20 minutes old. A younger token that Apple calls expired means the
// clocks disagree: a new token would fare no better, the push is rejected.
// Each push is resent after this at most once.
bool ApnsClient::retry_with_renewed_token(PendingPush &pending) {
    if (pending.token_renewal_tried) {
        log_token_problem("expired again",
                          "APNs refused a renewed provider token as expired too: is this "
                          "host's clock right?");
        return false;
    }
    if (pending.token_generation == token_->generation()) {
        const std::chrono::seconds age = token_->age();
        if (!token_->renew_expired()) {
            log_token_problem("expired young",
                              "APNs says the provider token signed " + std::to_string(age.count()) +
                                  " s ago expired; a new one is not signed before it is 20 minutes "
                                  "old (Apple's limit): is this host's clock right?");
            return false;
        }
        stats_.token_renewals++;
        log(LogLevel::info, "APNs says the provider token signed " + std::to_string(age.count()) +
                                " s ago expired; signed a new one");
    }
    pending.token_renewal_tried = true;
    stats_.retries++;
    queue_.push_front(&pending);
    dispatch();
    if (!queue_.empty())
        arm_sweep();
    return true;
}

void ApnsClient::log_token_problem(std::string_view kind, std::string_view message) {
    const std::uint64_t generation = token_ ? token_->generation() : 0;
    const bool first =
        token_problem_logged_.first != generation || token_problem_logged_.second != kind;
    if (first)
        token_problem_logged_ = {generation, std::string(kind)};
    log(first ? LogLevel::error : LogLevel::debug, message);
}

void ApnsClient::disable(std::string reason) {
    if (disabled_)
        return;
    disabled_ = true;
    disabled_reason_ = std::move(reason);
    retry_timer_.reset();
    sweep_timer_.reset();
    std::vector<std::unique_ptr<ApnsConnection>> closing;
    for (Slot &slot : slots_) {
        slot.reconnect_timer.reset();
        if (slot.connection)
            closing.push_back(std::move(slot.connection));
    }
    for (auto &connection : draining_)
        closing.push_back(std::move(connection));
    draining_.clear();
    // Requests in flight come back through on_unanswered and fail there.
    for (auto &connection : closing) {
        connection->close(disabled_reason_);
        bury(std::move(connection));
    }
    std::vector<PendingPush *> waiting(queue_.begin(), queue_.end());
    waiting.insert(waiting.end(), delayed_.begin(), delayed_.end());
    queue_.clear();
    delayed_.clear();
    for (PendingPush *pending : waiting)
        finish_later(*pending, PushOutcome::Result::failed, disabled_reason_);
}

std::optional<std::chrono::seconds> ApnsClient::provider_token_age() const {
    if (!token_)
        return std::nullopt;
    return token_->age();
}

void ApnsClient::retry_later(PendingPush &pending) {
    if (pending.retries >= settings_.max_retries) {
        finish(pending, PushOutcome::Result::failed, pending.last_status,
               "APNs answered " + std::to_string(pending.last_status) + " " + pending.last_reason +
                   " " + std::to_string(pending.retries + 1) + " times");
        return;
    }
    pending.retries++;
    pending.retry_at = loop_.now() + backoff(settings_.retry_initial_delay,
                                             settings_.retry_max_delay, pending.retries);
    if (pending.retry_at >= pending.deadline) {
        finish(pending, PushOutcome::Result::failed, pending.last_status,
               "APNs answered " + std::to_string(pending.last_status) + " " + pending.last_reason +
                   " until the push timed out");
        return;
    }
    stats_.retries++;
    delayed_.push_back(&pending);
    std::push_heap(delayed_.begin(), delayed_.end(), retries_later);
    arm_retry_timer();
}

void ApnsClient::arm_retry_timer() {
    if (delayed_.empty()) {
        retry_timer_.reset();
        return;
    }
    const steady_clock::time_point earliest = delayed_.front()->retry_at;
    if (retry_timer_ && retry_timer_at_ <= earliest)
        return;
    retry_timer_at_ = earliest;
    retry_timer_ = loop_.call_after(std::chrono::ceil<milliseconds>(earliest - loop_.now()),
                                    [this] { on_retry_timer(); });
}

void ApnsClient::on_retry_timer() {
    retry_timer_.reset();
    const auto now = loop_.now();
    while (!delayed_.empty() && delayed_.front()->retry_at <= now) {
        std::pop_heap(delayed_.begin(), delayed_.end(), retries_later);
        queue_.push_back(delayed_.back());
        delayed_.pop_back();
    }
    arm_retry_timer();
    dispatch();
    if (!queue_.empty())
        arm_sweep();
}

void ApnsClient::arm_sweep() {
    if (sweep_timer_)
        return;
    const milliseconds period =
        std::clamp(settings_.give_up_after / 10, milliseconds{10}, milliseconds{1000});
    sweep_timer_ = loop_.call_after(period, [this] { on_sweep(); });
}

// Pushes that waited for a connection past their deadline fail here.
void ApnsClient::on_sweep() {
    sweep_timer_.reset();
    const auto now = loop_.now();
    std::vector<PendingPush *> expired;
    for (PendingPush *pending : queue_) {
        if (now >= pending->deadline)
            expired.push_back(pending);
    }
    if (!expired.empty()) {
        std::erase_if(queue_,
                      [now](const PendingPush *pending) { return now >= pending->deadline; });
        const std::string reason =
            "APNs unreachable" +
            (last_connection_error_.empty() ? std::string() : ": " + last_connection_error_);
        log(LogLevel::warning, std::to_string(expired.size()) + " pushes failed: " + reason);
        for (PendingPush *pending : expired)
            finish(*pending, PushOutcome::Result::failed, pending->last_status, reason);
    }
    if (!queue_.empty())
        arm_sweep();
}

void ApnsClient::finish(PendingPush &pending, PushOutcome::Result result, int http_status,
                        std::string_view reason, std::optional<std::int64_t> unregistered_at_ms) {
    // Built in a local, not a reused member: `done` may send() and finish more.
    PushOutcome outcome;
    outcome.result = result;
    outcome.http_status = http_status;
    outcome.reason.assign(reason);
    outcome.unregistered_at_ms = unregistered_at_ms;
    outcome.apns_id = std::move(pending.apns_id);
    Done done = std::move(pending.done);
    release(pending);
    XAPS_ASSERT(done != nullptr); // every push is final exactly once
    done(outcome);
}

void ApnsClient::finish_later(PendingPush &pending, PushOutcome::Result result,
                              std::string_view reason) {
    // A client destroyed first drops its pushes uncalled, as promised.
    loop_.post([this, alive = std::weak_ptr<char>(alive_), &pending, result,
                reason = std::string(reason)] {
        if (alive.lock()) {
            finish(pending, result, 0, reason);
        }
    });
}

// --- helpers ---------------------------------------------------------------

void ApnsClient::refresh_expiration() {
    const std::int64_t now_seconds = std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count();
    if (now_seconds == expiration_second_)
        return;
    expiration_second_ = now_seconds;
    char buffer[24];
    const auto result =
        std::to_chars(buffer, buffer + sizeof(buffer), now_seconds + settings_.expiration.count());
    expiration_.assign(buffer, result.ptr);
}

milliseconds ApnsClient::backoff(milliseconds initial, milliseconds max, unsigned attempt) {
    milliseconds delay = std::max(initial, milliseconds{1});
    for (unsigned i = 1; i < attempt && delay < max; i++)
        delay *= 2;
    delay = std::min(delay, max);
    // Jitter in [delay/2, delay]: many workers must not retry in lockstep.
    std::uniform_int_distribution<std::int64_t> jitter(delay.count() / 2, delay.count());
    return milliseconds{jitter(random_)};
}

ApnsClient::PendingPush &ApnsClient::acquire() {
    if (free_.empty()) {
        pool_.push_back(std::make_unique<PendingPush>());
        return *pool_.back();
    }
    PendingPush *pending = free_.back();
    free_.pop_back();
    pending->released = false;
    return *pending;
}

void ApnsClient::release(PendingPush &pending) {
    XAPS_ASSERT(!pending.released);
    pending.released = true;
    pending.done = nullptr;
    free_.push_back(&pending);
}

void ApnsClient::log(LogLevel level, std::string_view message) const noexcept {
    if (!log_)
        return;
    try {
        log_(level, message);
    } catch (...) {
        // A logger that fails has nowhere to report to.
    }
}

} // namespace xaps
