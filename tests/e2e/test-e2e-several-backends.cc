// End to end: several Dovecot backends sharing one registration store on a
// real PostgreSQL (PostgresServer, from a temporary directory). Two instances,
// A and B, each with its own worker, xaps_db_path and mock APNs, run the
// package's shipped files plus docs/several-backends-example.conf, the
// README's "Several backends" example, with the test database's connection
// string put in: the documented configuration is the tested one.
//
// One database and both instances serve the whole suite; every case uses
// users and device tokens of its own.
#include "e2e-doveadm-command.h"
#include "e2e-fixture.h"
#include "postgres-server.h"
#include "temporary-directory.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#if !defined(XAPS_DOVEADM_MODULE_PATH) || !defined(XAPS_SEVERAL_BACKENDS_EXAMPLE)
#error "meson must define XAPS_DOVEADM_MODULE_PATH and XAPS_SEVERAL_BACKENDS_EXAMPLE"
#endif

namespace {

using namespace xaps::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using e2e::joined;
using e2e::push_timeout;

// How long a change made through one backend may take to show on another, or
// the database to take a worker back after its restart (the worker's backoff
// reaches 30 s): bounds of a failure only.
constexpr auto propagation_timeout = 90s;

std::string read_text_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// The README's example with `conninfo` as the value of xaps_shared_store, and
// the value of xaps_shared_store_timeout it sets.
struct ExampleConfig {
    std::string text;
    std::chrono::milliseconds shared_store_timeout{5000}; // the setting's default
};

ExampleConfig example_config(const std::string &conninfo) {
    const std::string source = read_text_file(XAPS_SEVERAL_BACKENDS_EXAMPLE);
    if (source.empty()) {
        throw std::runtime_error(std::string("cannot read ") + XAPS_SEVERAL_BACKENDS_EXAMPLE);
    }
    static const std::regex setting(R"(^\s*([a-z_]+)\s*=\s*(.*?)\s*$)");
    static const std::regex duration(R"(^([0-9]+)\s*(ms|s|secs?|min|mins)$)");
    ExampleConfig config;
    int conninfo_lines = 0;
    std::istringstream lines(source);
    for (std::string line; std::getline(lines, line);) {
        std::smatch match;
        if (std::regex_match(line, match, setting) && match[1] == "xaps_shared_store") {
            line = "xaps_shared_store = " + conninfo;
            conninfo_lines++;
        } else if (std::regex_match(line, match, setting) &&
                   match[1] == "xaps_shared_store_timeout") {
            const std::string value = match[2];
            std::smatch parts;
            if (!std::regex_match(value, parts, duration)) {
                throw std::runtime_error("the example's xaps_shared_store_timeout is not a "
                                         "duration this test reads: " +
                                         value);
            }
            const long number = std::stol(parts[1]);
            const std::string unit = parts[2];
            config.shared_store_timeout = unit == "ms" ? std::chrono::milliseconds(number)
                                          : unit.starts_with("min") ? std::chrono::minutes(number)
                                                                    : std::chrono::seconds(number);
        }
        config.text += line + "\n";
    }
    if (conninfo_lines != 1) {
        throw std::runtime_error("the example must set xaps_shared_store once:\n" + source);
    }
    return config;
}

// ---- a backend ------------------------------------------------------------

const std::vector<std::string> suite_users = {"carol", "dave", "erin", "frank",    "grace",
                                              "heidi", "ivan", "judy", "marker-a", "marker-b"};

// One Dovecot backend: its mock APNs, its Dovecot (own ports, base_dir,
// xaps_db_path), and the file its dovecot.conf includes last, which holds the
// README's example while the backend uses the shared store.
struct Backend {
    std::string name;
    std::string marker_user;
    std::string marker_token;
    std::unique_ptr<MockApnsServer> apns;
    std::unique_ptr<TemporaryDirectory> conf_dir;
    std::unique_ptr<DovecotInstance> dovecot;
    // Running without the shared store (the migration case); TearDown
    // gives it back.
    bool alone = false;

    std::string shared_conf_path() const { return conf_dir->path() + "/several-backends.conf"; }
};

// The example as an admin adds it to 95-xaps.conf: inside plugin { } on
// Dovecot 2.3, as global settings on 2.4.
std::string as_admin_adds_it(const std::string &example) {
    if (installed_dovecot_version().at_least(2, 4)) {
        return example;
    }
    return "plugin {\n" + example + "}\n";
}

class E2eSeveralBackends : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (::geteuid() != 0) {
            skip_reason_ = "end-to-end tests run Dovecot and create users: they need root";
            return;
        }
        if (!PostgresServer::available()) {
            skip_reason_ = "no PostgreSQL server installed (/usr/lib/postgresql/*/bin)";
            return;
        }
        try {
            module_dir_ = e2e::directory_holding_doveadm_module(XAPS_DOVEADM_MODULE_PATH);
            const CommandResult probe = e2e::run_in_namespace(module_dir_->path(), {"/bin/true"});
            if (probe.exit_code == e2e::no_mount_namespace_exit_code) {
                skip_reason_ = "no private mount namespace for doveadm here: " + probe.err;
                return;
            }
            if (probe.exit_code != 0) {
                setup_failure_ = "cannot run a command in a mount namespace: " + probe.err;
                return;
            }
            postgres_ = std::make_unique<PostgresServer>();
            example_ = example_config(postgres_->conninfo());
            backends_[0] = make_backend("A", 0xa000000a);
            backends_[1] = make_backend("B", 0xb000000b);
            for (Backend &backend : backends_) {
                set_shared_store(backend, true);
                backend.dovecot->start();
            }
        } catch (const std::exception &error) {
            setup_failure_ = error.what();
            if (postgres_) {
                setup_failure_ += "\nPostgreSQL's log:\n" + postgres_->log();
            }
            for (Backend &backend : backends_) {
                if (backend.dovecot) {
                    setup_failure_ +=
                        "\nDovecot " + backend.name + "'s log:\n" + backend.dovecot->log();
                }
            }
        }
    }

    static void TearDownTestSuite() {
        for (Backend &backend : backends_) {
            if (backend.dovecot) {
                backend.dovecot->stop();
            }
            backend = Backend{};
        }
        postgres_.reset();
        module_dir_.reset();
    }

    void SetUp() override {
        if (!skip_reason_.empty()) {
            GTEST_SKIP() << skip_reason_;
        }
        ASSERT_EQ(setup_failure_, "");
        for (Backend &backend : backends_) {
            ASSERT_TRUE(backend.dovecot && backend.dovecot->running())
                << "backend " << backend.name << " is not running (an earlier case failed)";
        }
    }

    void TearDown() override {
        if (!skip_reason_.empty() || !setup_failure_.empty()) {
            return;
        }
        for (Backend &backend : backends_) {
            backend.apns->set_responder(nullptr);
            e2e::expect_no_refusals(*backend.apns);
            expect_clean_log(backend);
            if (backend.alone) {
                try {
                    restart(backend, true);
                } catch (const std::exception &error) {
                    ADD_FAILURE() << "backend " << backend.name
                                  << " did not start again with the shared store: " << error.what();
                }
            }
        }
    }

    static Backend make_backend(const std::string &name, unsigned marker_number) {
        Backend backend;
        backend.name = name;
        backend.marker_user = "marker-" + std::string(1, static_cast<char>(std::tolower(name[0])));
        backend.marker_token = e2e::device_token(marker_number);
        backend.apns = std::make_unique<MockApnsServer>(e2e::mock_apns_config());
        backend.apns->start();
        backend.conf_dir = std::make_unique<TemporaryDirectory>("xaps-backend-conf-");
        DovecotOptions options = e2e::dovecot_options(backend.apns->port());
        options.extra_users = suite_users;
        options.extra_config = "!include_try " + backend.shared_conf_path();
        backend.dovecot = std::make_unique<DovecotInstance>(std::move(options));
        return backend;
    }

    // Writes (or takes away) the README's example; takes effect at the next start.
    static void set_shared_store(Backend &backend, bool shared) {
        if (shared) {
            std::ofstream(backend.shared_conf_path(), std::ios::binary)
                << as_admin_adds_it(example_.text);
        } else {
            fs::remove(backend.shared_conf_path());
        }
    }

    // Stops the backend's Dovecot and starts it again with or without the
    // shared store.
    static void restart(Backend &backend, bool shared) {
        backend.dovecot->stop();
        set_shared_store(backend, shared);
        backend.alone = !shared;
        backend.dovecot->start();
    }

    // No Panic or Fatal, no process of Dovecot's killed by a signal.
    static void expect_clean_log(const Backend &backend) {
        std::vector<std::string> problems;
        ShutdownRaceFilter shutdown_race;
        std::istringstream lines(backend.dovecot->log());
        for (std::string line; std::getline(lines, line);) {
            if (shutdown_race.ignore(line)) {
                continue;
            }
            if (line.find("Panic: ") != std::string::npos ||
                line.find("Fatal: ") != std::string::npos ||
                line.find("killed with signal") != std::string::npos) {
                problems.push_back(line);
            }
        }
        EXPECT_EQ(joined(problems), "") << "Dovecot " << backend.name << "'s log:\n"
                                        << backend.dovecot->log();
    }

    static Backend &a() { return backends_[0]; }
    static Backend &b() { return backends_[1]; }

    std::unique_ptr<ImapClient> login(const Backend &backend, const std::string &user) {
        auto imap = std::make_unique<ImapClient>(backend.dovecot->imap_port());
        ImapResponse reply = imap->login(user, DovecotInstance::password);
        EXPECT_TRUE(reply.ok()) << reply.tagged;
        return imap;
    }

    static e2e::PhoneRegistration phone(const std::string &token) {
        e2e::PhoneRegistration registration;
        registration.device_token = token;
        return registration;
    }

    // One XAPPLEPUSHSERVICE in a session of its own; the reply as it came.
    ImapResponse try_register(const Backend &backend, const std::string &user,
                              const std::string &token) {
        std::unique_ptr<ImapClient> imap = login(backend, user);
        imap->set_timeout(60s);
        return imap->command(e2e::xapplepushservice_command(phone(token)));
    }

    // Registers and expects OK.
    void register_phone(const Backend &backend, const std::string &user, const std::string &token) {
        ImapResponse reply = try_register(backend, user, token);
        EXPECT_TRUE(reply.ok()) << "REGISTER of " << user << " on " << backend.name << ": "
                                << joined(reply.lines()) << "Dovecot " << backend.name
                                << "'s log:\n"
                                << backend.dovecot->log();
    }

    SmtpReply deliver(const Backend &backend, const std::string &user) {
        LmtpClient lmtp(backend.dovecot->lmtp_port());
        const std::string rcpt = user + "@example.com";
        return lmtp.deliver("sender@example.net", rcpt,
                            make_test_message("sender@example.net", rcpt, "Hello",
                                              "A mail that should wake up the phone.\n"));
    }

    // The tokens the backend's worker lists for `user` (LIST on its admin
    // socket, what doveadm xaps list asks).
    static std::set<std::string> listed_tokens(const Backend &backend,
                                               const std::string &user = {}) {
        std::set<std::string> tokens;
        for (const auto &registration :
             WorkerClient(backend.dovecot->admin_socket_path()).list(user)) {
            tokens.insert(registration.device_token);
        }
        return tokens;
    }

    static bool lists(const Backend &backend, const std::string &user, const std::string &token) {
        return listed_tokens(backend, user).contains(token);
    }

    // Waits until the backend lists (or no longer lists) the token.
    ::testing::AssertionResult eventually_listed(const Backend &backend, const std::string &user,
                                                 const std::string &token, bool listed) {
        if (eventually([&] { return lists(backend, user, token) == listed; },
                       propagation_timeout)) {
            return ::testing::AssertionSuccess();
        }
        return ::testing::AssertionFailure()
               << "backend " << backend.name << (listed ? " does not list " : " still lists ")
               << user << "'s " << token << "\nDovecot " << backend.name << "'s log:\n"
               << backend.dovecot->log();
    }

    CommandResult doveadm(const Backend &backend, std::vector<std::string> args) {
        args.insert(args.begin(), {e2e::doveadm_binary, "-c", backend.dovecot->conf_path()});
        return e2e::run_in_namespace(module_dir_->path(), args);
    }

    // `doveadm -f json <args>`, parsed; null after a failure (reported).
    Json::Value doveadm_json(const Backend &backend, std::vector<std::string> args) {
        args.insert(args.begin(), {"-f", "json"});
        const CommandResult result = doveadm(backend, args);
        EXPECT_EQ(result.exit_code, 0) << "doveadm on " << backend.name << ": " << result.err;
        std::optional<Json::Value> value = e2e::parse_json(result.out);
        EXPECT_TRUE(value.has_value()) << result.out;
        return value.value_or(Json::Value());
    }

    // The device tokens of `doveadm xaps list [-u user]` on the backend.
    std::set<std::string> doveadm_listed_tokens(const Backend &backend,
                                                const std::string &user = {}) {
        std::vector<std::string> args{"xaps", "list"};
        if (!user.empty()) {
            args.insert(args.end(), {"-u", user});
        }
        const Json::Value rows = doveadm_json(backend, args);
        std::set<std::string> tokens;
        EXPECT_TRUE(rows.isArray()) << rows;
        for (const auto &row : rows) {
            tokens.insert(row["device_token"].asString());
        }
        return tokens;
    }

    static std::size_t pushes_for(const Backend &backend, const std::string &token) {
        std::size_t count = 0;
        for (const MockApnsRequest &push : backend.apns->requests()) {
            count += push.device_token == token ? 1 : 0;
        }
        return count;
    }

    ::testing::AssertionResult eventually_pushed(const Backend &backend, const std::string &token,
                                                 std::size_t count) {
        if (eventually([&] { return pushes_for(backend, token) >= count; }, push_timeout)) {
            return ::testing::AssertionSuccess();
        }
        return ::testing::AssertionFailure()
               << "backend " << backend.name << "'s mock got " << pushes_for(backend, token)
               << " pushes for " << token << ", expected " << count << "\nDovecot " << backend.name
               << "'s log:\n"
               << backend.dovecot->log();
    }

    // Proves that every push the backend owes for what the test did so far
    // has reached its mock, so that "no (further) push" can be asserted: mail
    // to the backend's marker user goes through the same worker, in order
    // after the test's (see E2eTest::settle() in e2e-fixture.h), then the
    // worker has nothing pending. The marker's device is registered once,
    // again only when it is gone, so that settling works while the database
    // is down.
    void settle(const Backend &backend) {
        if (!lists(backend, backend.marker_user, backend.marker_token)) {
            register_phone(backend, backend.marker_user, backend.marker_token);
            ASSERT_TRUE(
                eventually_listed(backend, backend.marker_user, backend.marker_token, true));
        }
        const std::size_t before = pushes_for(backend, backend.marker_token);
        const SmtpReply delivery = deliver(backend, backend.marker_user);
        ASSERT_EQ(delivery.code, 250) << delivery.text();
        ASSERT_TRUE(eventually_pushed(backend, backend.marker_token, before + 1));
        std::string status;
        ASSERT_TRUE(eventually(
            [&] { return e2e::worker_idle(backend.dovecot->admin_socket_path(), status); },
            push_timeout))
            << "backend " << backend.name << "'s worker still has pushes to send:\n"
            << status;
    }

    static std::size_t log_lines_with(const Backend &backend, const std::string &text) {
        std::size_t count = 0;
        std::istringstream lines(backend.dovecot->log());
        for (std::string line; std::getline(lines, line);) {
            count += line.find(text) != std::string::npos ? 1 : 0;
        }
        return count;
    }

    static inline std::string skip_reason_;
    static inline std::string setup_failure_;
    static inline std::unique_ptr<TemporaryDirectory> module_dir_;
    static inline std::unique_ptr<PostgresServer> postgres_;
    static inline ExampleConfig example_;
    static inline Backend backends_[2];
};

TEST_F(E2eSeveralBackends, PhoneRegisteredOnAGetsItsPushFromBWhichDelivered) {
    const std::string token = e2e::device_token(0xc1);
    register_phone(a(), "carol", token);
    ASSERT_TRUE(eventually_listed(b(), "carol", token, true));

    const SmtpReply delivery = deliver(b(), "carol");
    ASSERT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(eventually_pushed(b(), token, 1));
    settle(b());
    settle(a());
    EXPECT_EQ(pushes_for(b(), token), 1u) << "one delivery, one push";
    EXPECT_EQ(pushes_for(a(), token), 0u) << "A handled no delivery for carol";
    for (const MockApnsRequest &push : b().apns->requests()) {
        if (push.device_token == token) {
            EXPECT_EQ(e2e::pushed_account_id(push), e2e::iphone_account_id) << push.body;
        }
    }
}

TEST_F(E2eSeveralBackends, PurgeOnOneBackendRemovesTheDeviceForAll) {
    const std::string by_token = e2e::device_token(0xf1);
    const std::string by_user = e2e::device_token(0xf2);
    register_phone(a(), "frank", by_token);
    ASSERT_TRUE(eventually_listed(b(), "frank", by_token, true));

    const Json::Value purged = doveadm_json(b(), {"xaps", "purge", "-t", by_token});
    EXPECT_EQ(purged[0]["removed"], 1) << purged;
    EXPECT_TRUE(eventually_listed(a(), "frank", by_token, false));
    EXPECT_EQ(doveadm_listed_tokens(a(), "frank"), std::set<std::string>{});

    const SmtpReply delivery = deliver(a(), "frank");
    EXPECT_EQ(delivery.code, 250) << delivery.text();
    settle(a());
    EXPECT_EQ(pushes_for(a(), by_token), 0u) << "a purged device gets no push";

    // A user purge, the other way round.
    register_phone(b(), "frank", by_user);
    ASSERT_TRUE(eventually_listed(a(), "frank", by_user, true));
    const Json::Value user_purged = doveadm_json(a(), {"xaps", "purge", "-u", "frank"});
    EXPECT_EQ(user_purged[0]["removed"], 1) << user_purged;
    EXPECT_TRUE(eventually_listed(b(), "frank", by_user, false));
    EXPECT_EQ(doveadm_listed_tokens(b(), "frank"), std::set<std::string>{});
}

TEST_F(E2eSeveralBackends, DeviceGoneAtAppleForAIsGoneForB) {
    const std::string token = e2e::device_token(0xd1);
    a().apns->set_responder([token](const MockApnsRequest &request) {
        MockApnsResponse response;
        if (request.device_token == token) {
            response.status = 410;
            response.reason = "Unregistered";
        }
        return response;
    });
    register_phone(b(), "dave", token);
    ASSERT_TRUE(eventually_listed(a(), "dave", token, true));

    const SmtpReply delivery = deliver(a(), "dave");
    ASSERT_EQ(delivery.code, 250) << delivery.text();
    ASSERT_TRUE(eventually_pushed(a(), token, 1));
    EXPECT_TRUE(eventually_listed(b(), "dave", token, false));
    EXPECT_TRUE(eventually_listed(a(), "dave", token, false));
}

TEST_F(E2eSeveralBackends, ListOnEitherBackendShowsDevicesRegisteredThroughBoth) {
    const std::string through_a = e2e::device_token(0xe1);
    const std::string through_b = e2e::device_token(0xe2);
    register_phone(a(), "erin", through_a);
    register_phone(b(), "erin", through_b);
    const std::set<std::string> both{through_a, through_b};
    for (const Backend *backend : {&a(), &b()}) {
        ASSERT_TRUE(eventually_listed(*backend, "erin", through_a, true));
        ASSERT_TRUE(eventually_listed(*backend, "erin", through_b, true));
        EXPECT_EQ(doveadm_listed_tokens(*backend, "erin"), both) << backend->name;
        const std::set<std::string> everybody = doveadm_listed_tokens(*backend);
        EXPECT_TRUE(everybody.contains(through_a) && everybody.contains(through_b))
            << backend->name;
    }
}

TEST_F(E2eSeveralBackends, DatabaseKilledAndRestartedLosesNothingAcknowledged) {
    // Markers known before the outage, so that settling works during it.
    settle(a());
    settle(b());
    const std::string on_a = e2e::device_token(0x91);
    const std::string on_b = e2e::device_token(0x92);
    register_phone(a(), "grace", on_a);
    register_phone(b(), "grace", on_b);
    for (const Backend *backend : {&a(), &b()}) {
        ASSERT_TRUE(eventually_listed(*backend, "grace", on_a, true));
        ASSERT_TRUE(eventually_listed(*backend, "grace", on_b, true));
    }

    constexpr const char *outage_line = "shared registration store unavailable: ";
    constexpr const char *back_line = "shared registration store reachable again after ";
    const std::size_t outages_before[2] = {log_lines_with(a(), outage_line),
                                           log_lines_with(b(), outage_line)};
    const std::size_t recoveries_before[2] = {log_lines_with(a(), back_line),
                                              log_lines_with(b(), back_line)};

    // heidi's phones keep registering on A while the database is killed:
    // each one answered OK must survive.
    std::mutex mutex;
    std::vector<std::string> acknowledged;
    std::string first_refusal;
    std::atomic<int> oks{0};
    std::thread registering([&] {
        try {
            std::unique_ptr<ImapClient> imap = login(a(), "heidi");
            imap->set_timeout(60s);
            for (unsigned i = 0; i < 12; i++) {
                const std::string token = e2e::device_token(0x8000 + i);
                ImapResponse reply = imap->command(e2e::xapplepushservice_command(phone(token)));
                std::lock_guard lock(mutex);
                if (!reply.ok()) {
                    first_refusal = reply.tagged;
                    return;
                }
                acknowledged.push_back(token);
                oks++;
            }
        } catch (const std::exception &error) {
            std::lock_guard lock(mutex);
            first_refusal = std::string("exception: ") + error.what();
        }
    });
    const bool some_acknowledged = eventually([&] { return oks >= 3; }, push_timeout);
    postgres_->kill_hard();
    registering.join();
    ASSERT_TRUE(some_acknowledged) << first_refusal;
    {
        std::lock_guard lock(mutex);
        if (acknowledged.size() < 12) {
            EXPECT_TRUE(first_refusal.find("NO [UNAVAILABLE]") != std::string::npos)
                << first_refusal;
        }
    }

    // Deliveries go on, and the devices known from before still get pushes.
    for (const Backend *backend : {&a(), &b()}) {
        const SmtpReply delivery = deliver(*backend, "grace");
        EXPECT_EQ(delivery.code, 250) << backend->name << ": " << delivery.text();
        EXPECT_TRUE(eventually_pushed(*backend, on_a, 1));
        EXPECT_TRUE(eventually_pushed(*backend, on_b, 1));
        settle(*backend);
        EXPECT_EQ(pushes_for(*backend, on_a), 1u) << backend->name;
        EXPECT_EQ(pushes_for(*backend, on_b), 1u) << backend->name;
    }

    // A REGISTER is refused within its bound, not left waiting.
    const auto bound = example_.shared_store_timeout + 10s;
    for (const Backend *backend : {&a(), &b()}) {
        const std::string token = e2e::device_token(backend == &a() ? 0x93 : 0x94);
        const auto started = std::chrono::steady_clock::now();
        ImapResponse reply = try_register(*backend, "grace", token);
        const auto took = std::chrono::steady_clock::now() - started;
        EXPECT_TRUE(reply.tagged.starts_with(reply.tag + " NO [UNAVAILABLE]"))
            << backend->name << ": " << joined(reply.lines());
        EXPECT_LT(took, bound)
            << backend->name << " took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
    }

    postgres_->start();
    // Registering works again once the workers reconnected.
    const std::string after_restart = e2e::device_token(0x95);
    ImapResponse last_reply;
    const bool registered_again = eventually(
        [&] {
            last_reply = try_register(b(), "grace", after_restart);
            if (!last_reply.ok()) {
                std::this_thread::sleep_for(200ms);
            }
            return last_reply.ok();
        },
        propagation_timeout);
    ASSERT_TRUE(registered_again) << joined(last_reply.lines()) << "Dovecot B's log:\n"
                                  << b().dovecot->log();

    // What the database kept, as a backend added now sees it: a replica
    // loaded from the database alone, complete once it shows the newest
    // registration.
    std::vector<std::string> must_survive{on_a, on_b};
    must_survive.insert(must_survive.end(), acknowledged.begin(), acknowledged.end());
    Backend fresh = make_backend("C", 0xc000000c);
    set_shared_store(fresh, true);
    fresh.dovecot->start();
    ASSERT_TRUE(eventually_listed(fresh, "grace", after_restart, true));
    const std::set<std::string> kept = listed_tokens(fresh);
    for (const std::string &token : must_survive) {
        EXPECT_TRUE(kept.contains(token)) << token << " was acknowledged and is lost";
    }
    for (const Backend *backend : {&a(), &b()}) {
        ASSERT_TRUE(eventually_listed(*backend, "grace", after_restart, true));
        const std::set<std::string> listed = listed_tokens(*backend);
        for (const std::string &token : must_survive) {
            EXPECT_TRUE(listed.contains(token)) << backend->name << " lost " << token;
        }
    }
    fresh.dovecot->stop();
    expect_clean_log(fresh);

    // One warning for the outage and one line when it ended, per worker.
    for (std::size_t i = 0; i < 2; i++) {
        const Backend &backend = backends_[i];
        EXPECT_TRUE(
            eventually([&] { return log_lines_with(backend, back_line) > recoveries_before[i]; },
                       propagation_timeout))
            << backend.dovecot->log();
        EXPECT_EQ(log_lines_with(backend, back_line), recoveries_before[i] + 1)
            << backend.dovecot->log();
        EXPECT_EQ(log_lines_with(backend, outage_line), outages_before[i] + 1)
            << backend.dovecot->log();
    }
}

TEST_F(E2eSeveralBackends, MigrateCopiesTheLocalStoreToTheSharedOneAndBack) {
    // A ran alone first: its phones are in its own LMDB store.
    const std::string alone_1 = e2e::device_token(0x71);
    const std::string alone_2 = e2e::device_token(0x72);
    restart(a(), false);
    register_phone(a(), "ivan", alone_1);
    register_phone(a(), "ivan", alone_2);

    restart(a(), true);
    EXPECT_FALSE(lists(b(), "ivan", alone_1)) << "only A's own store had it";
    const Json::Value to_shared = doveadm_json(a(), {"xaps", "migrate", "to-shared"});
    ASSERT_TRUE(to_shared.isArray() && to_shared.size() == 1u) << to_shared;
    EXPECT_GE(to_shared[0]["copied"].asUInt64() + to_shared[0]["existing"].asUInt64(), 2u)
        << to_shared;
    for (const Backend *backend : {&a(), &b()}) {
        EXPECT_TRUE(eventually_listed(*backend, "ivan", alone_1, true));
        EXPECT_TRUE(eventually_listed(*backend, "ivan", alone_2, true));
    }

    // A phone registered through the shared store goes back into A's LMDB
    // store, which A uses once it runs alone again.
    const std::string shared = e2e::device_token(0x73);
    register_phone(b(), "judy", shared);
    ASSERT_TRUE(eventually_listed(a(), "judy", shared, true));
    const Json::Value to_local = doveadm_json(a(), {"xaps", "migrate", "to-local"});
    ASSERT_TRUE(to_local.isArray() && to_local.size() == 1u) << to_local;
    EXPECT_GE(to_local[0]["copied"].asUInt64(), 1u) << to_local;

    restart(a(), false);
    EXPECT_EQ(listed_tokens(a(), "judy"), std::set<std::string>{shared});
    EXPECT_EQ(listed_tokens(a(), "ivan"), (std::set<std::string>{alone_1, alone_2}));
}

} // namespace
