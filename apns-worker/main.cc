// xaps-worker: the Dovecot service (service xaps) that owns the APNs
// credentials, the registration store and the connections to Apple.
// The order is Dovecot's usual one for a service: init, read settings and
// credentials while still root, drop privileges, open the store as the
// service's user, run, deinit.
#include "apns-client.h"
#include "caservice-client.h"
#include "certificate-expiry.h"
#include "dovecot-cxx.h"
#include "dovecot-event-loop.h"
#include "provider-token.h"
#include "push-scheduler.h"
#include "registration-store.h"
#include "request-handler.h"
#include "tls-context.h"
#include "worker-connection.h"
#include "worker-events.h"
#include "worker-log.h"
#include "worker-settings.h"
#include "xaps-error.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

// Stands in for Apple while no credential works, so registrations can still
// be listed and purged, and every push fails with the reason.
class NoCredentialSender final : public xaps::PushSender {
public:
    NoCredentialSender(xaps::EventLoop &loop, std::string reason)
        : loop_(loop), reason_(std::move(reason)) {}
    void send(const xaps::Push &, Done done) override {
        // PushSender promises never to call back from within send().
        auto watch = std::make_shared<std::unique_ptr<xaps::EventLoop::Watch>>();
        *watch = loop_.call_after(0ms, [watch, done = std::move(done), this]() mutable {
            xaps::PushOutcome outcome;
            outcome.result = xaps::PushOutcome::Result::failed;
            outcome.reason = reason_;
            auto keep = std::move(*watch);
            done(outcome);
        });
    }

private:
    xaps::EventLoop &loop_;
    std::string reason_;
};

// Only the credential credential_kind() chose is passed on, so that the kind
// STATUS reports is the one in use when several are configured.
xaps::ApnsSettings apns_settings_from(const xaps::XapsSettings &s) {
    xaps::ApnsSettings apns;
    apns.host = s.apns_host;
    apns.port = s.apns_port;
    apns.ca_file = s.apns_ca_file;
    switch (s.credential_kind()) {
    case xaps::CredentialKind::pem:
        apns.cert_file = s.apns_cert_file;
        apns.key_file = s.apns_key_file;
        break;
    case xaps::CredentialKind::pkcs12:
        apns.p12_file = s.apns_p12_file;
        apns.p12_password = s.apns_p12_password;
        break;
    case xaps::CredentialKind::token:
        apns.token_key_file = s.apns_token_key_file;
        apns.key_id = s.apns_key_id;
        apns.team_id = s.apns_team_id;
        apns.topic = s.apns_topic;
        break;
    case xaps::CredentialKind::apple_id:
    case xaps::CredentialKind::none:
        break;
    }
    apns.push_type = s.apns_push_type;
    apns.priority = s.apns_priority;
    apns.expiration = s.apns_expiration;
    apns.connections = s.apns_connections;
    return apns;
}

std::string_view credential_kind_name(xaps::CredentialKind kind) {
    switch (kind) {
    case xaps::CredentialKind::pem:
        return "pem";
    case xaps::CredentialKind::pkcs12:
        return "pkcs12";
    case xaps::CredentialKind::token:
        return "token";
    case xaps::CredentialKind::apple_id:
        return "apple-id";
    case xaps::CredentialKind::none:
        break;
    }
    return "none";
}

// Everything the running worker owns, in construction order.
struct Worker {
    xaps::XapsSettings settings;
    std::optional<xaps::TlsContext> tls;      // moved into the ApnsClient at start
    std::optional<xaps::ProviderToken> token; // likewise, with token auth
    std::string topic;
    std::string certificate_file; // for the admin: the file whose expiry is watched
    std::optional<std::chrono::system_clock::time_point> certificate_expiry;
    std::string credential_problem;

    xaps::DovecotEventLoop loop;
    std::unique_ptr<xaps::RegistrationStore> store;
    std::unique_ptr<xaps::GroupCommit> group_commit;
    std::unique_ptr<xaps::ApnsClient> apns;
    std::unique_ptr<NoCredentialSender> no_credential;
    std::unique_ptr<xaps::EventEmittingSender> push_events;
    std::unique_ptr<xaps::PushScheduler> scheduler;
    std::unique_ptr<xaps::RequestHandler> handler;
    std::unique_ptr<xaps::WorkerServer> server;
    std::unique_ptr<xaps::EventLoop::Watch> expire_timer;
    std::unique_ptr<xaps::EventLoop::Watch> certificate_timer;

    std::vector<std::pair<std::string, std::string>> status_rows() const;
    void schedule_expiry();
    void check_certificate();
};

std::unique_ptr<Worker> worker;

std::vector<std::pair<std::string, std::string>> Worker::status_rows() const {
    std::vector<std::pair<std::string, std::string>> rows;
    rows.emplace_back("topic", topic);
    rows.emplace_back("credential", std::string(credential_kind_name(settings.credential_kind())));
    if (!credential_problem.empty()) {
        rows.emplace_back("credential_problem", credential_problem);
    }
    if (certificate_expiry) {
        rows.emplace_back("certificate_expiry", xaps::iso8601_utc(*certificate_expiry));
        // The same words the log gives, for admins who look here first.
        if (auto notice = xaps::certificate_expiry_notice(certificate_file, *certificate_expiry,
                                                          std::chrono::system_clock::now())) {
            rows.emplace_back("certificate_warning", notice->message);
        }
    }
    if (apns) {
        if (auto age = apns->provider_token_age()) {
            rows.emplace_back("token_age_seconds", std::to_string(age->count()));
        }
        auto stats = apns->stats();
        rows.emplace_back("apns_connected", stats.connected ? "yes" : "no");
        rows.emplace_back("apns_queued", std::to_string(stats.queued));
        rows.emplace_back("apns_in_flight", std::to_string(stats.in_flight));
        rows.emplace_back("apns_retries", std::to_string(stats.retries));
        rows.emplace_back("apns_reconnects", std::to_string(stats.reconnects));
    } else {
        rows.emplace_back("apns_connected", "no");
    }
    auto counters = scheduler->counters();
    rows.emplace_back("notifies", std::to_string(counters.notifies));
    rows.emplace_back("pushes_sent", std::to_string(counters.pushes_sent));
    rows.emplace_back("pushes_delivered", std::to_string(counters.pushes_delivered));
    rows.emplace_back("pushes_failed", std::to_string(counters.pushes_failed));
    rows.emplace_back("devices_removed", std::to_string(counters.devices_removed));
    rows.emplace_back("pending", std::to_string(counters.pending));
    rows.emplace_back("registrations", std::to_string(store->size()));
    return rows;
}

void Worker::schedule_expiry() {
    expire_timer = loop.call_after(1h, [this] {
        try {
            std::size_t expired = store->expire(xaps::system_unix_seconds());
            if (expired > 0) {
                e_info(xaps::worker_event(),
                       "expired %zu registrations not renewed within xaps_registration_ttl",
                       expired);
            }
        } catch (const xaps::Error &e) {
            e_error(xaps::worker_event(), "expiring registrations: %s", e.what());
        }
        schedule_expiry();
    });
}

// At start, daily, and the moment it expires: Apple's certificates last a
// year, and the admin needs the warning well before pushes stop.
void Worker::check_certificate() {
    certificate_timer.reset();
    if (!certificate_expiry) {
        return;
    }
    const auto now = std::chrono::system_clock::now();
    if (auto notice = xaps::certificate_expiry_notice(certificate_file, *certificate_expiry, now)) {
        xaps::log_from_core(notice->level, notice->message);
        if (notice->level == xaps::LogLevel::error) {
            // Apple refuses an expired certificate: stop trying, keep serving
            // LIST/PURGE, and answer REGISTER unavailable from now on.
            credential_problem = notice->message;
            if (handler) {
                handler->set_topic("");
            }
            if (apns) {
                apns->disable(notice->message);
            }
            return;
        }
    }
    auto next = std::chrono::milliseconds(24h);
    const auto until_expiry =
        std::chrono::ceil<std::chrono::milliseconds>(*certificate_expiry - now) + 1s;
    next = std::min(next, until_expiry);
    certificate_timer = loop.call_after(next, [this] { check_certificate(); });
}

// Runs as root: credentials may be readable by root only.
void load_credentials(Worker &w) {
    auto kind = w.settings.credential_kind();
    if (kind == xaps::CredentialKind::none) {
        w.credential_problem = "no APNs credential configured: set xaps_apns_cert_file and "
                               "xaps_apns_key_file, xaps_apns_p12_file, or "
                               "xaps_apns_token_key_file (with xaps_apns_key_id, "
                               "xaps_apns_team_id and xaps_apns_topic) in 95-xaps.conf";
        e_info(xaps::worker_event(), "%s; iOS devices are not offered push until then",
               w.credential_problem.c_str());
        return;
    }
    if (kind == xaps::CredentialKind::apple_id) {
        // Legacy Apple-ID provisioning: one synchronous exchange, bounded to
        // 30 s, and only when no valid certificate is stored yet. It runs
        // before the worker serves anyone, so it delays no mail process.
        try {
            xaps::ProvisionedCertificate provisioned = xaps::provision_or_reuse(
                xaps::caservice_settings_from(w.settings), w.settings.db_path,
                std::chrono::system_clock::now(), xaps::log_from_core);
            w.settings.apns_cert_file = provisioned.cert_file;
            w.settings.apns_key_file = provisioned.key_file;
        } catch (const xaps::Error &e) {
            w.credential_problem = e.what();
            e_error(xaps::worker_event(),
                    "Apple ID certificate provisioning failed, push disabled: %s", e.what());
            return;
        }
    }
    try {
        const xaps::ApnsSettings apns = apns_settings_from(w.settings);
        // The key is read and a first token signed now, while root.
        std::optional<xaps::ProviderToken> token;
        if (kind == xaps::CredentialKind::token) {
            token.emplace(xaps::ProviderToken::load(apns));
        }
        w.tls.emplace(xaps::TlsContext::load(apns));
        w.token = std::move(token);
        w.topic = w.tls->topic();
        w.certificate_expiry = w.tls->certificate_expiry();
        w.certificate_file = kind == xaps::CredentialKind::pkcs12 ? apns.p12_file : apns.cert_file;
        if (w.token) {
            e_info(xaps::worker_event(), "APNs token auth with key %s (id %s, team %s), topic %s",
                   apns.token_key_file.c_str(), apns.key_id.c_str(), apns.team_id.c_str(),
                   w.topic.c_str());
        }
    } catch (const xaps::Error &e) {
        // Stay up without push: exiting would only make the master respawn
        // us in a loop, and registrations must still be listable.
        w.credential_problem = e.what();
        e_error(xaps::worker_event(), "APNs credential unusable, push disabled: %s", e.what());
    }
}

void start_worker(Worker &w) {
    xaps::LmdbStoreOptions store_options;
    store_options.path = w.settings.db_path;
    store_options.ttl = w.settings.registration_ttl;
    store_options.max_devices_per_user = w.settings.max_devices_per_user;
    w.store = xaps::open_lmdb_store(store_options);
    w.group_commit =
        std::make_unique<xaps::GroupCommit>(w.loop, *w.store, xaps::system_unix_seconds);

    xaps::PushSender *sender = nullptr;
    if (w.tls) {
        w.apns = std::make_unique<xaps::ApnsClient>(w.loop, apns_settings_from(w.settings),
                                                    std::move(*w.tls), std::move(w.token),
                                                    xaps::log_from_core);
        w.tls.reset();
        w.token.reset();
        sender = w.apns.get();
    } else {
        w.no_credential = std::make_unique<NoCredentialSender>(w.loop, w.credential_problem);
        sender = w.no_credential.get();
    }
    w.push_events = std::make_unique<xaps::EventEmittingSender>(*sender);
    sender = w.push_events.get();

    xaps::PushSchedulerSettings scheduler_settings;
    scheduler_settings.delay = w.settings.delay;
    w.scheduler =
        std::make_unique<xaps::PushScheduler>(w.loop, *w.store, *sender, scheduler_settings);
    w.scheduler->set_error_log(
        [](std::string_view message) { xaps::log_from_core(xaps::LogLevel::error, message); });

    xaps::RequestHandlerSettings handler_settings;
    handler_settings.topic = w.topic;
    handler_settings.subtopics = w.settings.subtopics;
    w.handler = std::make_unique<xaps::RequestHandler>(
        *w.store, *w.group_commit, *w.scheduler, handler_settings, [&w] { return w.status_rows(); },
        xaps::system_unix_seconds);
    w.server = std::make_unique<xaps::WorkerServer>(*w.handler);
    w.schedule_expiry();
    w.check_certificate();
}

extern "C" void client_connected(struct master_service_connection *conn) noexcept {
    try {
        worker->server->accept(conn);
    } catch (const std::exception &e) {
        e_error(xaps::worker_event(), "accepting a connection: %s", e.what());
    }
}

} // namespace

int main(int argc, char *argv[]) {
    master_service = master_service_init(
        "xaps",
        static_cast<enum master_service_flags>(MASTER_SERVICE_FLAG_UPDATE_PROCTITLE |
                                               MASTER_SERVICE_FLAG_NO_IDLE_DIE),
        &argc, &argv, "");
    if (master_getopt(master_service) > 0) {
        return FATAL_DEFAULT;
    }
    worker = std::make_unique<Worker>();
    try {
        worker->settings = xaps::read_worker_settings(master_service);
    } catch (const std::exception &e) {
        i_fatal("%s", e.what());
    }
    master_service_init_log(master_service);
    xaps::worker_log_init();
    load_credentials(*worker);

    // No ALLOW_ROOT flag: Dovecot then refuses to run the worker as root.
    restrict_access_by_env(static_cast<enum restrict_access_flags>(0), nullptr);
    restrict_access_allow_coredumps(TRUE);
    try {
        start_worker(*worker);
    } catch (const std::exception &e) {
        i_fatal("cannot start: %s", e.what());
    }
    master_service_init_finish(master_service);
    if (worker->apns) {
        worker->apns->start();
    }

    master_service_run(master_service, client_connected);

    worker.reset();
    xaps::worker_log_deinit();
    master_service_deinit(&master_service);
    return 0;
}
