// bench-list-import: LIST of a large store and IMPORT beside REGISTERs,
// through the worker's RequestHandler and GroupCommit on PollEventLoop with
// the real LMDB store on this disk (the handler's memory and the commits'
// scheduling), and LIST through the worker's socket.
//
//   * LIST of 1,000,000 registrations to a peer that never reads: the
//     handler's heap may grow by a page and no more (the socket adds its
//     high-water mark of output on top, 3 MiB).
//   * LIST of the same store to a peer that reads everything: heap growth
//     while the whole store streams past.
//   * As root, both again through the real socket path: xaps-worker under
//     Dovecot, filled through IMPORT on its admin socket, its RssAnon
//     sampled while a client sends LIST and does not read, then reads.
//   * IMPORT of 100,000 rows with doveadm's window of 32 in flight while a
//     REGISTER arrives every 2 ms: REGISTER's p99 from request to answer.
#include "bench-environment.h"
#include "bench-report.h"
#include "group-commit.h"
#include "line-connection.h"
#include "pipelined-worker-client.h"
#include "poll-event-loop.h"
#include "process-stats.h"
#include "push-gate.h"
#include "push-scheduler.h"
#include "registration-store.h"
#include "request-handler.h"
#include "temporary-directory.h"
#include "worker-protocol.h"

#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t now_seconds = 1700000000;
constexpr const char *topic = "com.apple.mail.XServer.bench";

struct Options {
    std::size_t list_rows = 1000000;
    std::size_t import_rows = 100000;
};

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--list-rows") == 0) {
            options.list_rows = std::strtoull(argv[i + 1], nullptr, 10);
        } else if (std::strcmp(argv[i], "--import-rows") == 0) {
            options.import_rows = std::strtoull(argv[i + 1], nullptr, 10);
        } else {
            std::fprintf(stderr, "usage: bench-list-import [--list-rows N] [--import-rows N]\n");
            std::exit(2);
        }
    }
    return options;
}

std::int64_t unix_seconds_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

Registration numbered(const std::string &prefix, std::size_t n) {
    Registration registration;
    registration.user = prefix + std::to_string(n);
    registration.account_id = "0715A26B-CA09-4730-A419-793000CA982E";
    char token[65];
    std::snprintf(token, sizeof token, "%064zx", n);
    registration.device_token = token;
    registration.subtopic = "com.apple.mobilemail";
    registration.aps_version = 2;
    registration.mailboxes = {"INBOX", "Sent Messages", "Archive", "Notes", "Drafts"};
    registration.registered_at = now_seconds - 100;
    registration.last_seen = now_seconds - 100;
    return registration;
}

class NeverAvailable : public PushSender {
public:
    void send(const Push &, Done) override {}
    std::string unavailable_reason() const override { return {}; }
};

struct Worker {
    explicit Worker(const std::string &directory, std::size_t max_map) {
        auto options = LmdbStoreOptions::from(default_xaps_settings());
        options.path = directory;
        options.max_map_size = max_map;
        options.max_devices_per_user = 0;
        store = open_lmdb_store(options);
        gate.open(sender, topic);
        scheduler = std::make_unique<PushScheduler>(
            loop, *store, gate, PushSchedulerSettings::from(default_xaps_settings()),
            [] { return now_seconds; });
        group_commit = std::make_unique<GroupCommit>(loop, *store, [] { return now_seconds; });
        handler = std::make_unique<RequestHandler>(*store, *group_commit, *scheduler, gate,
                                                   RequestHandlerSettings{{"com.apple.mobilemail"}},
                                                   RequestHandler::StatusRows{},
                                                   [] { return now_seconds; });
    }

    PollEventLoop loop;
    NeverAvailable sender;
    PushGate gate{loop, "not opened yet"};
    std::unique_ptr<RegistrationStore> store;
    std::unique_ptr<PushScheduler> scheduler;
    std::unique_ptr<GroupCommit> group_commit;
    std::unique_ptr<RequestHandler> handler;
};

std::size_t anon_kib() {
    return process_memory(::getpid()).anon_kib;
}

void fill(RegistrationStore &store, std::size_t rows) {
    std::vector<Registration> batch;
    for (std::size_t n = 0; n < rows; ++n) {
        batch.push_back(numbered("list", n));
        if (batch.size() == 10000 || n + 1 == rows) {
            store.import_batch(batch);
            batch.clear();
        }
    }
}

void bench_list(const std::string &directory, std::size_t rows) {
    Worker worker(directory, std::size_t{4} << 30);
    progress("filling the store with " + std::to_string(rows) + " registrations");
    fill(*worker.store, rows);

    // A peer that never reads: the first pages fill its 3 MiB, then nothing.
    {
        ::malloc_trim(0); // what the fill freed is not growth
        const std::size_t before = anon_kib();
        std::size_t buffered = 0;
        std::function<void()> waiting;
        ReplyFlow flow;
        flow.has_room = [&buffered] { return buffered < 3 * 1024 * 1024; };
        flow.when_room = [&waiting](std::function<void()> resume) { waiting = std::move(resume); };
        auto sink = std::make_shared<std::vector<std::string>>();
        worker.handler->handle(
            protocol::RequestLine{1, protocol::List{}}, protocol::PeerRole::admin,
            [sink, &buffered](protocol::Reply reply) {
                sink->push_back(protocol::encode_reply(reply));
                buffered += sink->back().size();
            },
            flow);
        for (int i = 0; i < 50; ++i) {
            worker.loop.run_once(std::chrono::milliseconds(1));
        }
        const double grown_mib =
            static_cast<double>(anon_kib() - std::min(before, anon_kib())) / 1024.0;
        progress("  never-reading peer: " + std::to_string(sink->size()) + " rows buffered (" +
                 fixed(static_cast<double>(buffered) / (1 << 20), 1) + " MiB), heap +" +
                 fixed(grown_mib, 1) + " MiB");
        report("list",
               "LIST of " + std::to_string(rows) + " to a peer that never reads: heap growth",
               grown_mib, "MiB", "< 16 MiB", at_most(grown_mib, 16));
    }

    // A peer that reads everything as it comes.
    {
        ::malloc_trim(0);
        const std::size_t before = anon_kib();
        std::size_t peak = before;
        std::size_t count = 0;
        bool done = false;
        std::function<void()> waiting;
        std::size_t unread = 0;
        ReplyFlow flow;
        flow.has_room = [&unread] { return unread < 3 * 1024 * 1024; };
        flow.when_room = [&waiting](std::function<void()> resume) { waiting = std::move(resume); };
        const auto start = Clock::now();
        worker.handler->handle(
            protocol::RequestLine{2, protocol::List{}}, protocol::PeerRole::admin,
            [&](protocol::Reply reply) {
                unread += protocol::encode_reply(reply).size();
                count += reply.status == protocol::ReplyStatus::row;
                done = reply.status != protocol::ReplyStatus::row;
            },
            flow);
        while (!done) {
            peak = std::max(peak, anon_kib());
            unread = 0; // the peer read it all
            std::function<void()> resume = std::move(waiting);
            waiting = nullptr;
            resume();
        }
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        const double grown_mib = static_cast<double>(peak - std::min(before, peak)) / 1024.0;
        progress("  reading peer: " + std::to_string(count) + " rows in " + fixed(seconds, 1) +
                 " s, heap peak +" + fixed(grown_mib, 1) + " MiB");
        report("list", "LIST of " + std::to_string(rows) + " to a reading peer: heap peak growth",
               grown_mib, "MiB", "< 16 MiB", at_most(grown_mib, 16));
        report("list", "LIST of " + std::to_string(rows) + ": rows per second",
               static_cast<double>(count) / seconds, "rows/s");
    }
}

// REGISTER every 2 ms, alone or beside an IMPORT of `rows` (0: none) kept at
// doveadm's window; the REGISTERs' latencies from request to answer. With
// `one_commit_each`, the imports are stored as the worker did without group
// commit for them: a durable import() per row, a window's worth per turn.
std::vector<double> registers_beside_import(const std::string &directory, std::size_t rows,
                                            std::chrono::milliseconds alone_for,
                                            bool one_commit_each = false) {
    Worker worker(directory, std::size_t{1} << 30);
    constexpr std::size_t window = 32; // doveadm xaps import
    std::size_t sent = 0;
    std::size_t answered = 0;
    std::size_t failed = 0;
    std::function<void()> send_import = [&] {
        const std::uint64_t id = ++sent;
        worker.handler->handle(protocol::RequestLine{id, protocol::Import{numbered("import", id)}},
                               protocol::PeerRole::admin, [&](protocol::Reply reply) {
                                   ++answered;
                                   failed += reply.status != protocol::ReplyStatus::ok;
                                   if (sent < rows) {
                                       send_import();
                                   }
                               });
    };
    std::vector<double> register_ms;
    std::size_t registers = 0;
    const auto start = Clock::now();
    for (std::size_t i = 0; i < window && sent < rows && !one_commit_each; ++i) {
        send_import();
    }
    auto next_register = Clock::now();
    while (rows > 0 ? answered < rows : Clock::now() - start < alone_for) {
        if (Clock::now() >= next_register) {
            next_register += std::chrono::milliseconds(2);
            const auto asked = Clock::now();
            worker.handler->handle(
                protocol::RequestLine{1000000000 + ++registers,
                                      protocol::Register{numbered("phone", registers)}},
                protocol::PeerRole::mail, [&register_ms, asked](protocol::Reply) {
                    register_ms.push_back(
                        std::chrono::duration<double, std::milli>(Clock::now() - asked).count());
                });
        }
        // The REGISTER read in the same turn as a window of imports waits
        // for them, as it did in the worker.
        for (std::size_t i = 0; i < window && one_commit_each && sent < rows; ++i) {
            worker.store->import(numbered("import", ++sent));
            ++answered;
        }
        worker.loop.run_once(std::chrono::milliseconds(1));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const auto counters = worker.group_commit->counters();
    progress("  " + std::to_string(rows) + " imports in " + fixed(seconds, 1) + " s (" +
             std::to_string(failed) + " failed), " + std::to_string(counters.commits) +
             " commits (" + fixed(seconds * 1000 / static_cast<double>(counters.commits), 1) +
             " ms each), largest batch " + std::to_string(counters.largest_batch) + "; REGISTER " +
             describe_distribution(register_ms, "ms"));
    if (rows > 0) {
        report("import", "IMPORT of " + std::to_string(rows) + ": rows per second",
               static_cast<double>(rows) / seconds, "rows/s");
    }
    return register_ms;
}

void bench_import(const std::string &directory, std::size_t rows) {
    const auto alone = registers_beside_import(directory + "-alone", 0, std::chrono::seconds(3));
    report("import", "REGISTER p99 alone (one durable commit on this disk)",
           percentile(alone, 0.99), "ms");
    const auto beside = registers_beside_import(directory, rows, {});
    const double p99 = percentile(beside, 0.99);
    report("import", "REGISTER p99 during the IMPORT", p99, "ms", "< 10 ms", at_most(p99, 10));
    // A durable commit per row takes long: a small import shows the effect.
    const std::size_t model_rows = std::min<std::size_t>(rows, 2000);
    progress("the same with one durable commit per imported row, " + std::to_string(model_rows) +
             " rows");
    const auto apart = registers_beside_import(directory + "-apart", model_rows, {}, true);
    report("import", "REGISTER p99 during an IMPORT committed row by row", percentile(apart, 0.99),
           "ms");
}

// The same LIST through the real socket path: the worker under Dovecot,
// filled through IMPORT, and a client on the admin socket that sends LIST
// and does not read for a while, then reads it all. The worker's heap
// (RssAnon) is sampled throughout.
void bench_list_socket(std::size_t rows) {
    MockApnsServer mock(mock_config());
    mock.start();
    test::DovecotOptions options = dovecot_options(mock.port(), false);
    // 1,000,000 registrations map ~780 MiB: room for the map under the limit.
    options.extra_config = "service xaps {\n  vsz_limit = 4G\n}\n";
    test::DovecotInstance dovecot(options);
    dovecot.start();
    const pid_t worker = wait_for_worker_process();
    progress("  importing " + std::to_string(rows) + " registrations through the admin socket");
    {
        PipelinedWorkerClient importer(dovecot.admin_socket_path());
        constexpr std::size_t chunk = 2000;
        for (std::size_t first = 0; first < rows; first += chunk) {
            std::string lines;
            const std::size_t last = std::min(rows, first + chunk);
            for (std::size_t n = first; n < last; ++n) {
                Registration registration = numbered("socket", n);
                registration.registered_at = registration.last_seen = unix_seconds_now() - 100;
                lines += protocol::encode_request(n + 1, protocol::Import{registration});
            }
            auto outcome = importer.exchange(lines, last - first, std::chrono::seconds(120));
            if (outcome.failed != 0) {
                throw Error(ErrorKind::unavailable, "IMPORT failed: " + outcome.first_failure);
            }
        }
    }
    const std::size_t before = process_memory(worker).anon_kib;
    auto lister = test::LineConnection::connect_unix(dovecot.admin_socket_path());
    lister.write_all("VERSION\txaps\t1\t1\n");
    lister.write_all(protocol::encode_request(1, protocol::List{}));
    std::size_t peak = before;
    for (int i = 0; i < 30; ++i) { // 3 s of a client that does not read
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        peak = std::max(peak, process_memory(worker).anon_kib);
    }
    const double unread_mib = static_cast<double>(peak - std::min(before, peak)) / 1024.0;
    progress("  worker heap " + std::to_string(before / 1024) + " MiB before the LIST, +" +
             fixed(unread_mib, 1) + " MiB while its client does not read");
    lister.set_timeout(std::chrono::seconds(120));
    lister.read_line(); // VERSION
    std::size_t count = 0;
    const auto start = Clock::now();
    for (;;) {
        const std::string line = lister.read_line();
        if (line.find("\tROW\t") != std::string::npos) {
            if (++count % 50000 == 0) {
                peak = std::max(peak, process_memory(worker).anon_kib);
            }
            continue;
        }
        if (line != "1\tOK\t" + std::to_string(rows)) {
            throw Error(ErrorKind::internal, "LIST ended with " + line);
        }
        break;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double grown_mib = static_cast<double>(peak - std::min(before, peak)) / 1024.0;
    progress("  " + std::to_string(count) + " rows read in " + fixed(seconds, 1) +
             " s; worker heap peak +" + fixed(grown_mib, 1) + " MiB");
    report("list",
           "socket LIST of " + std::to_string(rows) + ", client not reading: worker heap growth",
           unread_mib, "MiB", "< 16 MiB", at_most(unread_mib, 16));
    report("list", "socket LIST of " + std::to_string(rows) + ": worker heap peak growth",
           grown_mib, "MiB", "< 16 MiB", at_most(grown_mib, 16));
    dovecot.stop();
}

} // namespace

int main(int argc, char **argv) {
    const Options options = parse_options(argc, argv);
    try {
        test::TemporaryDirectory scratch("xaps-bench-list-");
        progress("LIST of " + std::to_string(options.list_rows) + " registrations");
        bench_list(scratch.path() + "/list", options.list_rows);
        if (::geteuid() == 0) {
            progress("LIST of " + std::to_string(options.list_rows) +
                     " registrations through the worker's admin socket");
            bench_list_socket(options.list_rows);
        } else {
            progress("not root: the socket LIST (Dovecot) is left out");
        }
        progress("IMPORT of " + std::to_string(options.import_rows) + " rows beside REGISTERs");
        bench_import(scratch.path() + "/import", options.import_rows);
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-list-import failed: %s\n", error.what());
        report_failure("list-import", "run", error.what());
        return 1;
    }
    return 0;
}
