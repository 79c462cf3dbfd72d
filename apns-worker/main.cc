// xaps-worker: the Dovecot service (service xaps) that owns the APNs
// credentials, the registration store and the connections to Apple.
// The order is Dovecot's usual one for a service: init, read settings and
// credentials while still root, drop privileges, open the store as the
// service's user, run, deinit.
#include "apns-client.h"
#include "apns-payload.h"
#include "certificate-expiry.h"
#include "client-limit-watch.h"
#include "dovecot-cxx.h"
#include "dovecot-event-loop.h"
#include "provider-token.h"
#include "push-gate.h"
#include "push-scheduler.h"
#include "registration-store.h"
#include "request-handler.h"
#include "shared-store-link.h"
#include "shared-store-module.h"
#include "store-migration.h"
#include "store-writes.h"
#include "tls-context.h"
#include "utc-time.h"
#include "worker-connection.h"
#include "worker-events.h"
#include "worker-log.h"
#include "worker-settings.h"
#include "xaps-assert.h"
#include "xaps-error.h"

#include <cerrno>
#include <cstring>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <sys/stat.h>

namespace {

using namespace std::chrono_literals;

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
    std::string certificate_file;             // for the admin: the file whose expiry is watched
    std::optional<std::chrono::system_clock::time_point> certificate_expiry;
    std::string credential_problem;             // why load_credentials() found none usable
    std::vector<std::string> private_key_files; // read while root; must stay root's

    xaps::DovecotEventLoop loop;
    // With xaps_shared_store: the module first, as what it opened must go
    // before it is unloaded; `store` is then the local replica.
    std::unique_ptr<xaps::SharedStoreModule> shared_module;
    std::unique_ptr<xaps::RegistrationStore> store;
    xaps::StoreReplica *replica = nullptr;
    std::unique_ptr<xaps::SharedStoreLink> shared_link;
    std::unique_ptr<xaps::StoreWrites> writes;
    std::unique_ptr<xaps::GroupCommit> group_commit;
    std::unique_ptr<xaps::ApnsClient> apns;
    std::unique_ptr<xaps::PushGate> gate;
    std::unique_ptr<xaps::EventEmittingSender> push_events;
    std::unique_ptr<xaps::PushScheduler> scheduler;
    std::unique_ptr<xaps::RequestHandler> handler;
    std::unique_ptr<xaps::StoreMigrator> migrator; // with xaps_shared_store
    std::unique_ptr<xaps::WorkerServer> server;
    xaps::ClientLimitWatch client_limit_watch{0};
    std::unique_ptr<xaps::EventLoop::Watch> expire_timer;
    std::unique_ptr<xaps::EventLoop::Watch> certificate_timer;

    std::vector<std::pair<std::string, std::string>> status_rows() const;
    void schedule_expiry();
    void check_certificate();
};

std::unique_ptr<Worker> worker;

std::vector<std::pair<std::string, std::string>> Worker::status_rows() const {
    std::vector<std::pair<std::string, std::string>> rows;
    rows.emplace_back("topic", gate->topic());
    if (gate->is_open()) {
        if (std::string warning = xaps::mail_topic_warning(gate->topic()); !warning.empty()) {
            rows.emplace_back("topic_warning", warning);
        }
    }
    rows.emplace_back("credential", std::string(credential_kind_name(settings.credential_kind())));
    if (!gate->is_open()) {
        rows.emplace_back("credential_problem", gate->reason());
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
    if (shared_link) {
        for (auto &row : shared_link->status_rows()) {
            rows.push_back(std::move(row));
        }
    }
    rows.emplace_back("connections", std::to_string(server->connection_count()));
    rows.emplace_back("client_limit",
                      std::to_string(master_service_get_client_limit(master_service)));
    return rows;
}

void Worker::schedule_expiry() {
    expire_timer = loop.call_after(1h, [this] {
        // With a shared store, the first worker whose hour is up expires for
        // the cluster.
        writes->expire(xaps::system_unix_seconds(), [](const std::optional<xaps::Error> &error,
                                                       std::size_t expired) {
            if (error) {
                e_error(xaps::worker_event(), "expiring registrations: %s", error->what());
            } else if (expired > 0) {
                e_info(xaps::worker_event(),
                       "expired %zu registrations not renewed within "
                       "xaps_registration_ttl",
                       expired);
            }
        });
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
            gate->close(notice->message);
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
    // Legacy Apple-ID provisioning is `doveadm xaps provision`'s job: the
    // worker only reads the PEM files it writes (provisioning/caservice-state.h),
    // so it never waits for Apple's service.
    std::string provisioned_cert_file;
    std::string provisioned_key_file;
    if (kind == xaps::CredentialKind::apple_id) {
        provisioned_cert_file = w.settings.db_path + "/caservice/mail.pem";
        provisioned_key_file = w.settings.db_path + "/caservice/mail.key";
        struct stat st {};
        if (::stat(provisioned_cert_file.c_str(), &st) != 0 && errno == ENOENT) {
            w.credential_problem = "no push certificate provisioned for xaps_apple_id yet (" +
                                   provisioned_cert_file + "): run `doveadm xaps provision`";
            e_warning(xaps::worker_event(), "%s; push disabled until then",
                      w.credential_problem.c_str());
            return;
        }
    }
    try {
        xaps::ApnsSettings apns = xaps::ApnsSettings::from(w.settings);
        if (kind == xaps::CredentialKind::apple_id) {
            apns.cert_file = provisioned_cert_file;
            apns.key_file = provisioned_key_file;
        }
        // The key is read and a first token signed now, while root.
        std::optional<xaps::ProviderToken> token;
        if (kind == xaps::CredentialKind::token) {
            token.emplace(xaps::ProviderToken::load(apns));
        }
        w.tls.emplace(xaps::TlsContext::load(apns));
        w.token = std::move(token);
        for (const std::string *file : {&apns.key_file, &apns.p12_file, &apns.token_key_file}) {
            if (!file->empty()) {
                w.private_key_files.push_back(*file);
            }
        }
        if (apns.key_file.empty() && !apns.cert_file.empty()) {
            w.private_key_files.push_back(apns.cert_file); // holds the key too
        }
        w.certificate_expiry = w.tls->certificate_expiry();
        w.certificate_file = kind == xaps::CredentialKind::pkcs12 ? apns.p12_file : apns.cert_file;
        if (w.token) {
            e_info(xaps::worker_event(), "APNs token auth with key %s (id %s, team %s), topic %s",
                   apns.token_key_file.c_str(), apns.key_id.c_str(), apns.team_id.c_str(),
                   w.tls->topic().c_str());
        }
    } catch (const xaps::Error &e) {
        // Stay up without push: exiting would only make the master respawn
        // us in a loop, and registrations must still be listable.
        w.credential_problem = e.what();
        e_error(xaps::worker_event(), "APNs credential unusable, push disabled: %s", e.what());
    }
}

// Runs as the xaps user: a key it can read is one a compromised worker (or
// anyone who becomes that user) could copy, although the worker needs it only
// while root at start.
void warn_about_readable_keys(const Worker &w) {
    for (const auto &file : w.private_key_files) {
        if (::access(file.c_str(), R_OK) == 0) {
            e_warning(xaps::worker_event(),
                      "%s holds the APNs private key and the worker's own user can read it: "
                      "make it root's only (chown root:root, chmod 0600); the worker reads it "
                      "at start, before it drops root",
                      file.c_str());
        }
    }
}

// The shared store's module, the local replica at
// <xaps_db_path>/shared-replica and the store thread.
void open_shared_store(Worker &w) {
    w.shared_module = std::make_unique<xaps::SharedStoreModule>();
    // The replica's parent, which the standalone store would have created.
    if (::mkdir(w.settings.db_path.c_str(), 0700) != 0 && errno != EEXIST) {
        throw xaps::Error(xaps::ErrorKind::config, "cannot create xaps_db_path " +
                                                       w.settings.db_path + ": " +
                                                       std::strerror(errno));
    }
    xaps::LmdbStoreOptions replica_options = xaps::LmdbStoreOptions::from(w.settings);
    replica_options.path = w.settings.db_path + "/shared-replica";
    replica_options.log = xaps::log_from_core;
    std::unique_ptr<xaps::ReplicaRegistrationStore> replica =
        xaps::open_lmdb_replica(replica_options);
    w.replica = replica.get();
    w.store = std::move(replica);

    xaps::SharedStoreLinkSettings link_settings;
    link_settings.timeout = w.settings.shared_store_timeout;
    w.shared_link = std::make_unique<xaps::SharedStoreLink>(
        w.loop,
        [&w](xaps::LogSink thread_safe_log) {
            xaps::SharedStoreOptions options;
            options.conninfo = w.settings.shared_store;
            options.timeout = w.settings.shared_store_timeout;
            options.ttl = w.settings.registration_ttl;
            options.max_devices_per_user = w.settings.max_devices_per_user;
            options.log = std::move(thread_safe_log);
            return w.shared_module->open(options);
        },
        *w.replica, link_settings, xaps::log_from_core);
    // Every worker's hourly timer asks; a run within the last 50 minutes
    // anywhere in the cluster answers for it.
    w.writes = std::make_unique<xaps::SharedStoreWrites>(*w.shared_link, 50min);
}

void start_worker(Worker &w) {
    if (w.settings.shared_store.empty()) {
        xaps::LmdbStoreOptions store_options = xaps::LmdbStoreOptions::from(w.settings);
        store_options.log = xaps::log_from_core;
        w.store = xaps::open_lmdb_store(store_options);
        w.writes = std::make_unique<xaps::LocalStoreWrites>(*w.store);
    } else {
        open_shared_store(w);
    }
    w.group_commit =
        std::make_unique<xaps::GroupCommit>(w.loop, *w.writes, xaps::system_unix_seconds);

    w.gate = std::make_unique<xaps::PushGate>(
        w.loop, w.credential_problem.empty() ? "APNs client not started" : w.credential_problem);
    if (w.tls) {
        w.apns = std::make_unique<xaps::ApnsClient>(w.loop, xaps::ApnsSettings::from(w.settings),
                                                    std::move(*w.tls), std::move(w.token),
                                                    xaps::log_from_core);
        w.tls.reset();
        w.token.reset();
        w.gate->open(*w.apns, w.apns->topic());
        if (std::string warning = xaps::mail_topic_warning(w.apns->topic()); !warning.empty()) {
            e_warning(xaps::worker_event(), "%s", warning.c_str());
        }
    }
    w.push_events = std::make_unique<xaps::EventEmittingSender>(*w.gate);
    xaps::PushSender *sender = w.push_events.get();

    w.scheduler = std::make_unique<xaps::PushScheduler>(
        w.loop, *w.store, *w.writes, *sender, xaps::PushSchedulerSettings::from(w.settings));
    w.scheduler->set_error_log(
        [](std::string_view message) { xaps::log_from_core(xaps::LogLevel::error, message); });

    w.handler = std::make_unique<xaps::RequestHandler>(
        *w.store, *w.writes, *w.group_commit, *w.scheduler, *w.gate,
        xaps::RequestHandlerSettings::from(w.settings), [&w] { return w.status_rows(); },
        xaps::system_unix_seconds);
    w.server = std::make_unique<xaps::WorkerServer>(*w.handler, w.settings.admin_socket_path);
    w.client_limit_watch = xaps::ClientLimitWatch(master_service_get_client_limit(master_service));
    w.handler->set_hello_observer([&w](const xaps::protocol::Hello &hello) {
        if (auto warning =
                w.client_limit_watch.on_process_limit(hello.service, hello.process_limit)) {
            e_warning(xaps::worker_event(), "%s", warning->c_str());
        }
    });
    if (w.shared_link) {
        // The standalone store's options without a log sink: the migration
        // opens it on the store thread, where Dovecot's log must not be used.
        w.migrator = std::make_unique<xaps::StoreMigrator>(
            xaps::LmdbStoreOptions::from(w.settings), xaps::submit_through(*w.shared_link),
            xaps::system_unix_seconds, xaps::log_from_core);
        w.handler->set_migrate_handler([&w](std::uint64_t id,
                                            const xaps::protocol::Migrate &request,
                                            const xaps::RequestHandler::Reply &reply) {
            w.migrator->handle(id, request, reply);
        });
    }
    w.schedule_expiry();
    w.check_certificate();
}

extern "C" void client_connected(struct master_service_connection *conn) noexcept {
    try {
        worker->server->accept(conn);
        if (auto warning =
                worker->client_limit_watch.on_accept(worker->server->connection_count())) {
            e_warning(xaps::worker_event(), "%s", warning->c_str());
        }
    } catch (const std::exception &e) {
        e_error(xaps::worker_event(), "accepting a connection: %s", e.what());
    }
}

} // namespace

int main(int argc, char *argv[]) {
#ifdef M_ARENA_MAX
    // One malloc arena: glibc gives each thread that allocates its own, and
    // each reserves 64 MiB of address space, which counts toward vsz_limit
    // as the store's map does. Only name resolution and the shared store's
    // link run on other threads.
    mallopt(M_ARENA_MAX, 1);
#endif
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
    // A broken invariant is logged as Dovecot logs its own: a Panic.
    xaps::set_assertion_handler([](const char *message) { i_panic("%s", message); });
    xaps::worker_log_init();
    load_credentials(*worker);

    // No ALLOW_ROOT flag: Dovecot then refuses to run the worker as root.
    restrict_access_by_env(static_cast<enum restrict_access_flags>(0), nullptr);
    // The APNs key is in this process's memory from here on: no core file
    // and no ptrace by the xaps user may yield it. Not dumpable also makes
    // the kernel give /proc/<pid>/ to root.
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        i_fatal("prctl(PR_SET_DUMPABLE, 0) failed: %s", strerror(errno));
    }
    warn_about_readable_keys(*worker);
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
