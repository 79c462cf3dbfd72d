// bench-shared-store: figure 8, the shared registration store (PostgreSQL)
// next to the LMDB store, through the store API in this process, as the
// worker's store thread and event loop call them:
//   * NOTIFY lookup cost on a store of 100k registrations: visit_user() on
//     the LMDB store, on a replica (an LMDB store fed by the shared store's
//     changes_after(), what the worker reads in shared mode), and find_user()
//     on PostgreSQL directly (what a lookup would cost without the replica),
//     with how long the replica took to catch up with the 100k;
//   * REGISTER, on those stores: write_batch() of group-commit-sized
//     batches (64 puts: 64 concurrent REGISTERs under load end up in one
//     transaction), one after the other as the store thread runs them; the
//     rate, and the p99 of a batch, which is what a REGISTER waits for under
//     load;
//   * a single put() alone (a REGISTER on an idle server): p50 and p99.
// Both stores live on the same file system (PostgreSQL's data directory is
// under /tmp, as is the LMDB store), with their durable defaults (LMDB
// syncs each commit; PostgreSQL has fsync and synchronous_commit on).
// No target: the figures are for the README's performance section.
#include "bench-devices.h"
#include "bench-report.h"
#include "pgsql-registration-store.h"
#include "postgres-server.h"
#include "registration-store.h"
#include "shared-registration-store.h"
#include "temporary-directory.h"
#include "xaps-error.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

constexpr const char *figure = "8 shared store";

struct Options {
    std::size_t registrations = 100000; // the store the lookups run on
    std::size_t batches = 100;          // write_batch() calls for the REGISTER rate
    std::size_t batch_size = 64;
    std::size_t single_puts = 500;
    std::size_t lookups = 20000;   // on LMDB and the replica
    std::size_t pg_lookups = 5000; // on PostgreSQL
};

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::size_t value = std::strtoul(argv[i + 1], nullptr, 10);
        if (std::strcmp(argv[i], "--registrations") == 0) {
            options.registrations = value;
        } else if (std::strcmp(argv[i], "--batches") == 0) {
            options.batches = value;
        } else if (std::strcmp(argv[i], "--batch-size") == 0) {
            options.batch_size = value;
        } else if (std::strcmp(argv[i], "--single-puts") == 0) {
            options.single_puts = value;
        } else if (std::strcmp(argv[i], "--lookups") == 0) {
            options.lookups = value;
        } else if (std::strcmp(argv[i], "--pg-lookups") == 0) {
            options.pg_lookups = value;
        } else {
            argc = -1;
            break;
        }
    }
    if (argc < 0 || argc % 2 == 0 || options.registrations == 0 || options.batch_size == 0) {
        std::fprintf(stderr, "usage: bench-shared-store [--registrations N] [--batches N] "
                             "[--batch-size N] [--single-puts N] [--lookups N] "
                             "[--pg-lookups N]\n");
        std::exit(2);
    }
    return options;
}

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

double milliseconds_since(Clock::time_point start) {
    return duration<double, std::milli>(Clock::now() - start).count();
}

void require_stored(const std::vector<std::optional<Error>> &results) {
    for (const auto &result : results) {
        if (result) {
            throw *result;
        }
    }
}

struct RegisterFigures {
    double registrations_per_second = 0;
    std::vector<double> batch_ms;
    std::vector<double> put_ms;
};

// Devices from `first` on: new registrations each, as a burst of phones
// registering would be.
RegisterFigures measure_register(RegistrationStore &store, std::size_t first,
                                 const Options &options) {
    RegisterFigures figures;
    std::size_t next = first;
    std::vector<Registration> batch;
    const auto start = Clock::now();
    for (std::size_t b = 0; b < options.batches; ++b) {
        batch.clear();
        for (std::size_t i = 0; i < options.batch_size; ++i) {
            batch.push_back(device_registration(next++));
        }
        const auto batch_start = Clock::now();
        require_stored(store.write_batch(batch, unix_now(), {}).puts);
        figures.batch_ms.push_back(milliseconds_since(batch_start));
    }
    const double seconds = duration<double>(Clock::now() - start).count();
    figures.registrations_per_second =
        static_cast<double>(options.batches * options.batch_size) / seconds;
    for (std::size_t i = 0; i < options.single_puts; ++i) {
        const Registration registration = device_registration(next++);
        const auto put_start = Clock::now();
        store.put(registration, unix_now());
        figures.put_ms.push_back(milliseconds_since(put_start));
    }
    return figures;
}

// Devices [0, count) in commits of `per_commit`; returns the seconds it took.
double populate(RegistrationStore &store, std::size_t count, std::size_t per_commit) {
    const auto start = Clock::now();
    std::vector<Registration> batch;
    for (std::size_t index = 0; index < count;) {
        batch.clear();
        for (; index < count && batch.size() < per_commit; ++index) {
            batch.push_back(device_registration(index));
        }
        require_stored(store.write_batch(batch, unix_now(), {}).puts);
    }
    return duration<double>(Clock::now() - start).count();
}

// Devices [0, count) straight into the shared store's table with one SQL
// statement, the same rows its write path would make (device_registration(),
// each change with its revision): that path costs a few round trips per
// registration, which would make the benchmark wait minutes for its store.
// Returns why not when the table is not what this statement expects; the
// caller then goes through the store's API.
std::optional<std::string> bulk_load_pgsql(const std::string &conninfo, std::size_t count,
                                           std::int64_t now) {
    std::unique_ptr<PGconn, decltype(&PQfinish)> connection(PQconnectdb(conninfo.c_str()),
                                                            &PQfinish);
    if (PQstatus(connection.get()) != CONNECTION_OK) {
        return std::string(PQerrorMessage(connection.get()));
    }
    const std::string sql =
        "INSERT INTO xaps_registrations (user_name, user_lower, account_id, device_token, "
        "subtopic, aps_version, mailboxes, registered_at, last_seen, revision) "
        "SELECT 'bench' || i, 'bench' || i, "
        "'B3AC0000-0000-4000-8000-' || lpad(upper(to_hex(i)), 12, '0'), "
        "'b0b5' || lpad(to_hex(i * 2654435761), 52, '0') || lpad(to_hex(i), 8, '0'), "
        "'com.apple.mobilemail', 2, ARRAY['INBOX', 'Sent Messages'], " +
        std::to_string(now) + ", " + std::to_string(now) +
        ", nextval('xaps_revision') FROM generate_series(0::bigint, " + std::to_string(count) +
        " - 1) AS i ORDER BY i";
    std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(connection.get(), sql.c_str()),
                                                         &PQclear);
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
        return std::string(PQresultErrorMessage(result.get()));
    }
    // What autovacuum does soon after such a load: without statistics the
    // planner reads the whole table for a user's rows.
    result.reset(PQexec(connection.get(), "ANALYZE xaps_registrations"));
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
        return std::string(PQresultErrorMessage(result.get()));
    }
    return std::nullopt;
}

// Microseconds per lookup of a random user of the first `store_size`
// devices; each must find exactly its one registration.
double lookup_microseconds(std::size_t store_size, std::size_t lookups,
                           const std::function<std::size_t(const std::string &user)> &lookup) {
    const auto devices = random_devices(store_size, lookups);
    std::vector<std::string> users;
    users.reserve(devices.size());
    for (std::size_t device : devices) {
        users.push_back(device_user(device));
    }
    std::size_t found = 0;
    const auto start = Clock::now();
    for (const auto &user : users) {
        found += lookup(user);
    }
    const double total_us = duration<double, std::micro>(Clock::now() - start).count();
    if (found != lookups) {
        throw Error(ErrorKind::internal, "lookups found " + std::to_string(found) + " of " +
                                             std::to_string(lookups) + " registrations");
    }
    return total_us / static_cast<double>(lookups);
}

std::size_t visit_count(RegistrationStore &store, const std::string &user, std::int64_t now) {
    std::size_t found = 0;
    store.visit_user(user, now, [&found](const Registration &) { ++found; });
    return found;
}

LmdbStoreOptions lmdb_options(const std::string &path) {
    LmdbStoreOptions options = LmdbStoreOptions::from(default_xaps_settings());
    options.path = path;
    return options;
}

std::unique_ptr<SharedRegistrationStore> open_shared(const test::PostgresServer &server) {
    const XapsSettings settings = default_xaps_settings();
    SharedStoreOptions options;
    options.conninfo = server.conninfo();
    options.timeout = std::chrono::seconds(60);
    options.ttl = settings.registration_ttl;
    options.max_devices_per_user = settings.max_devices_per_user;
    options.log = [](LogLevel, std::string_view line) {
        progress("  shared store: " + std::string(line));
    };
    return open_pgsql_store(options);
}

void report_register(const char *store_name, const RegisterFigures &figures,
                     const Options &options) {
    const std::string batch = std::to_string(options.batch_size);
    report(figure, std::string("REGISTER rate, ") + store_name + ", write_batch of " + batch,
           figures.registrations_per_second, "reg/s");
    report(figure, std::string("  write_batch of ") + batch + " p99, " + store_name,
           percentile(figures.batch_ms, 0.99), "ms");
    report(figure, std::string("single put p50, ") + store_name, percentile(figures.put_ms, 0.5),
           "ms");
    report(figure, std::string("single put p99, ") + store_name, percentile(figures.put_ms, 0.99),
           "ms");
}

void run(const Options &options) {
    test::TemporaryDirectory dir("xaps-bench-shared-", test::TemporaryDirectory::disk_base());
    progress("figure 8: PostgreSQL server from " + dir.path());
    test::PostgresServer server;
    auto shared = open_shared(server);

    // NOTIFY lookups on stores of options.registrations.
    const std::string size = std::to_string(options.registrations / 1000) + "k";
    progress("  populating LMDB and PostgreSQL with " + size + " registrations");
    auto lmdb = open_lmdb_store(lmdb_options(dir.path() + "/lookup"));
    const double lmdb_load_seconds = populate(*lmdb, options.registrations, 10000);
    shared->size(); // creates the tables
    const auto pg_load_start = Clock::now();
    if (auto why_not = bulk_load_pgsql(server.conninfo(), options.registrations, unix_now())) {
        progress("  loading PostgreSQL through the store instead of SQL: " + *why_not);
        populate(*shared, options.registrations, 1000);
    }
    if (shared->size() != options.registrations) {
        throw Error(ErrorKind::internal, "PostgreSQL holds " + std::to_string(shared->size()) +
                                             " registrations, not " +
                                             std::to_string(options.registrations));
    }
    progress("  loaded in " + fixed(lmdb_load_seconds, 1) + " s (LMDB, 10,000 per commit), " +
             fixed(duration<double>(Clock::now() - pg_load_start).count(), 1) + " s (PostgreSQL)");

    auto replica = open_lmdb_replica(lmdb_options(dir.path() + "/shared-replica"));
    const auto replica_start = Clock::now();
    std::size_t changes = 0;
    for (;;) {
        const ChangePage page = shared->changes_after(replica->applied_revision(), 1000);
        replica->apply(page);
        changes += page.changes.size();
        if (page.changes.size() < 1000) {
            break;
        }
    }
    const double replica_seconds = duration<double>(Clock::now() - replica_start).count();
    progress("  replica caught up with " + std::to_string(changes) + " changes in " +
             fixed(replica_seconds, 1) + " s");
    if (replica->size() != options.registrations) {
        throw Error(ErrorKind::internal, "the replica holds " + std::to_string(replica->size()) +
                                             " registrations, not " +
                                             std::to_string(options.registrations));
    }

    const std::int64_t now = unix_now();
    const double lmdb_us =
        lookup_microseconds(options.registrations, options.lookups,
                            [&](const std::string &user) { return visit_count(*lmdb, user, now); });
    const double replica_us =
        lookup_microseconds(options.registrations, options.lookups, [&](const std::string &user) {
            return visit_count(*replica, user, now);
        });
    const double pg_us = lookup_microseconds(
        options.registrations, options.pg_lookups,
        [&](const std::string &user) { return shared->find_user(user, now).size(); });
    progress("  lookup: LMDB " + fixed(lmdb_us, 2) + " us, replica " + fixed(replica_us, 2) +
             " us, PostgreSQL " + fixed(pg_us, 1) + " us");

    report(figure, "NOTIFY lookup, LMDB visit_user, " + size + " stored", lmdb_us, "us");
    report(figure, "NOTIFY lookup, replica visit_user, " + size + " stored", replica_us, "us");
    report(figure, "NOTIFY lookup, PostgreSQL find_user, " + size + " stored", pg_us, "us");
    report(figure, "NOTIFY lookup replica / LMDB", replica_us / lmdb_us, "x");
    report(figure, "NOTIFY lookup PostgreSQL / LMDB", pg_us / lmdb_us, "x");
    report(figure, "replica catch-up from empty, " + size + " changes", replica_seconds, "s");

    // REGISTER on the same stores, new devices beyond those stored.
    const std::size_t register_first = options.registrations;
    const RegisterFigures lmdb_register = measure_register(*lmdb, register_first, options);
    progress("  LMDB: " + fixed(lmdb_register.registrations_per_second, 0) +
             " reg/s in batches; batch " + describe_distribution(lmdb_register.batch_ms, "ms") +
             "; put " + describe_distribution(lmdb_register.put_ms, "ms"));
    const RegisterFigures pg_register = measure_register(*shared, register_first, options);
    progress("  PostgreSQL: " + fixed(pg_register.registrations_per_second, 0) +
             " reg/s in batches; batch " + describe_distribution(pg_register.batch_ms, "ms") +
             "; put " + describe_distribution(pg_register.put_ms, "ms"));
    report_register("LMDB", lmdb_register, options);
    report_register("PostgreSQL", pg_register, options);
    report(figure, "REGISTER rate PostgreSQL / LMDB",
           pg_register.registrations_per_second / lmdb_register.registrations_per_second, "x");
    report(figure, "single put p99 PostgreSQL / LMDB",
           percentile(pg_register.put_ms, 0.99) / percentile(lmdb_register.put_ms, 0.99), "x");
}

} // namespace

int main(int argc, char **argv) {
    const Options options = parse_options(argc, argv);
    if (::geteuid() != 0) {
        std::fprintf(stderr, "bench-shared-store starts PostgreSQL as user postgres: run it as "
                             "root\n");
        return 2;
    }
    if (!test::PostgresServer::available()) {
        report_failure(figure, "shared store figures",
                       "PostgreSQL is not installed (apt-get install postgresql)");
        return 1;
    }
    try {
        run(options);
    } catch (const std::exception &error) {
        report_failure(figure, "shared store figures", error.what());
        std::fprintf(stderr, "bench-shared-store: %s\n", error.what());
        return 1;
    }
    return 0;
}
