// bench-scale: figure 5, the worker with a large registration store.
//
// For each store size (1,000 and 1,000,000 registrations, written straight
// into the worker's LMDB store through the store API, put_batch() per 10,000)
// a worker is started and measured:
//   * start to ready: from the moment the worker process has been exec'd by
//     Dovecot's master to its answer to the protocol handshake;
//   * resident memory (VmRSS, and how much of it is LMDB's mapped file)
//     after start and after the lookups below;
//   * NOTIFY lookup cost: worker CPU per NOTIFY for random users in a mailbox
//     none of them registered (a store lookup, no push), pipelined;
//   * find_user() alone, in this process, on the same store.
// Then, at the large size only, the upgrade of a store that the previous
// schema (version 1) laid out: written byte for byte by the tests' format 1
// writer, timed from open to a store ready to serve.
#include "bench-devices.h"
#include "bench-environment.h"
#include "bench-report.h"
#include "format1-store.h"
#include "pipelined-worker-client.h"
#include "process-stats.h"
#include "registration-store.h"
#include "temporary-directory.h"
#include "worker-client.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;
using std::chrono::duration;

struct Options {
    std::vector<std::size_t> sizes{1000, 1000000};
    std::size_t lookups = 20000;
};

Options parse_options(int argc, char **argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--large") == 0) {
            options.sizes.back() = std::strtoul(argv[i + 1], nullptr, 10);
        } else if (std::strcmp(argv[i], "--lookups") == 0) {
            options.lookups = std::strtoul(argv[i + 1], nullptr, 10);
        } else {
            std::fprintf(stderr, "usage: bench-scale [--large N] [--lookups N]\n");
            std::exit(2);
        }
    }
    return options;
}

std::string size_name(std::size_t size) {
    return size >= 1000000 && size % 1000000 == 0 ? std::to_string(size / 1000000) + "M"
           : size >= 1000 && size % 1000 == 0     ? std::to_string(size / 1000) + "k"
                                                  : std::to_string(size);
}

double mib(std::size_t kib) {
    return static_cast<double>(kib) / 1024;
}

// find_user() of random users on the store at `path`, in this process.
double find_user_microseconds(const std::string &path, std::size_t store_size,
                              std::size_t lookups) {
    auto options = LmdbStoreOptions::from(default_xaps_settings());
    options.path = path;
    auto store = open_lmdb_store(options);
    const auto devices = random_devices(store_size, lookups);
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    std::size_t found = 0;
    const auto start = Clock::now();
    for (std::size_t device : devices) {
        found += store->find_user(device_user(device), now).size();
    }
    const double total_us = duration<double, std::micro>(Clock::now() - start).count();
    if (found != lookups) {
        throw Error(ErrorKind::internal, "find_user found " + std::to_string(found) + " of " +
                                             std::to_string(lookups) + " registrations");
    }
    return total_us / static_cast<double>(lookups);
}

struct Costs {
    double notify_us = 0;
    double find_user_us = 0;
};

Costs measure(std::size_t size, std::size_t lookups) {
    const std::string name = size_name(size);
    progress("figure 5: store of " + name + " registrations");
    MockApnsServer mock(mock_config());
    mock.start();
    test::DovecotInstance dovecot(dovecot_options(mock.port(), false));

    const auto populate_start = Clock::now();
    populate_store(dovecot.db_path(), 0, size, dovecot.worker_user());
    const double populate_seconds = duration<double>(Clock::now() - populate_start).count();
    const double lookup_us = find_user_microseconds(dovecot.db_path(), size, lookups);
    progress("  populated in " + fixed(populate_seconds, 1) + " s; find_user() " +
             fixed(lookup_us, 2) + " us in-process");

    // Time from exec to the first handshake answer, measured by a client that
    // connects as soon as the process exists (the master made the socket).
    std::atomic<bool> done{false};
    std::optional<double> ready_ms;
    std::string ready_error;
    std::thread prober([&] {
        pid_t worker = 0;
        while (!done && (worker = find_descendant(worker_path)) == 0) {
        }
        if (worker == 0) {
            return;
        }
        const auto seen = Clock::now();
        while (!done) {
            try {
                test::WorkerClient probe(dovecot.worker_socket_path(),
                                         std::chrono::milliseconds(5000));
                ready_ms = duration<double, std::milli>(Clock::now() - seen).count();
                return;
            } catch (const Error &error) {
                ready_error = error.what();
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
        }
    });
    try {
        dovecot.start();
    } catch (...) {
        done = true;
        prober.join();
        throw;
    }
    prober.join();
    done = true;
    if (!ready_ms) {
        throw Error(ErrorKind::unavailable, "start to ready not measured: " + ready_error);
    }
    const pid_t worker = wait_for_worker_process();
    const MemoryUsage at_start = process_memory(worker);

    PipelinedWorkerClient notifier(dovecot.worker_socket_path());
    const std::size_t warm_up = lookups / 10;
    std::string warm_up_lines;
    std::string lines;
    const std::vector<std::string> events{"MessageNew"};
    std::uint64_t id = 1;
    for (std::size_t device : random_devices(size, lookups + warm_up)) {
        (id <= warm_up ? warm_up_lines : lines) +=
            protocol::encode_request(id, protocol::Notify{device_user(device), "Archive", events});
        ++id;
    }
    notifier.exchange(warm_up_lines, warm_up, std::chrono::seconds(60));
    // First pass: most pages of a large store are touched for the first time
    // (a page fault each); second pass over the same users: steady state.
    double pass_us[2] = {0, 0};
    for (double &us : pass_us) {
        const CpuTime before = process_cpu(worker);
        const auto outcome = notifier.exchange(lines, lookups, std::chrono::seconds(60));
        const CpuTime after = process_cpu(worker);
        if (outcome.failed > 0) {
            throw Error(ErrorKind::unavailable, "NOTIFY failed: " + outcome.first_failure);
        }
        us = duration<double, std::micro>(after.precise - before.precise).count() /
             static_cast<double>(lookups);
    }
    const double cold_notify_us = pass_us[0];
    const double notify_us = pass_us[1];
    const MemoryUsage after_lookups = process_memory(worker);
    progress("  ready " + fixed(*ready_ms, 1) + " ms after exec; RSS " +
             fixed(mib(at_start.rss_kib), 1) + " MiB (" + fixed(mib(at_start.file_kib), 1) +
             " mapped files), after lookups " + fixed(mib(after_lookups.rss_kib), 1) + " MiB (" +
             fixed(mib(after_lookups.file_kib), 1) + " mapped files); NOTIFY " +
             fixed(notify_us, 2) + " us of worker CPU each");
    dovecot.stop();
    if (auto problems = dovecot.log_problems(); !problems.empty()) {
        throw Error(ErrorKind::internal, "Dovecot logged: " + problems.front());
    }

    const std::string at = " at " + name;
    const bool judged = size >= 1000000;
    // The rest of the resident set is the store's file, mapped: page cache
    // the kernel shares and takes back, not the worker's own memory.
    report("5 scale", "worker RSS after the lookups" + at, mib(after_lookups.rss_kib), "MiB");
    report("5 scale", "  of which private (anonymous)" + at, mib(after_lookups.anon_kib), "MiB",
           judged ? "< 64 MiB" : "",
           judged ? at_most(mib(after_lookups.anon_kib), 64) : Verdict::info);
    report("5 scale", "worker start to ready" + at, *ready_ms, "ms", judged ? "< 100 ms" : "",
           judged ? at_most(*ready_ms, 100) : Verdict::info);
    report("5 scale", "worker CPU per NOTIFY lookup, first touch" + at, cold_notify_us, "us");
    report("5 scale", "worker CPU per NOTIFY lookup, steady state" + at, notify_us, "us");
    const auto store_bytes =
        static_cast<double>(std::filesystem::file_size(dovecot.db_path() + "/data.mdb"));
    report("5 scale", "store file (data.mdb)" + at, store_bytes / (1024 * 1024), "MiB");
    const double bytes_each = store_bytes / static_cast<double>(size);
    report("5 scale", "store per registration (2 mailboxes)" + at, bytes_each, "B",
           judged ? "<= 300 B" : "", judged ? at_most(bytes_each, 300) : Verdict::info);
    report("5 scale", "store find_user() in-process" + at, lookup_us, "us");
    if (judged) {
        report("5 scale", "populating the store directly" + at, populate_seconds, "s");
    }
    return Costs{notify_us, lookup_us};
}

// Seconds to open a schema version 1 store of `size` registrations of the
// same shape: the upgrade at the first start after a package upgrade.
double upgrade_seconds(std::size_t size) {
    progress("figure 5: upgrade of a schema version 1 store of " + size_name(size));
    test::TemporaryDirectory dir("xaps-bench-upgrade-", test::TemporaryDirectory::disk_base());
    {
        // Schema version 1 took about 690 bytes per registration.
        test::Format1StoreWriter writer(dir.path(), std::max(std::size_t{4} << 30, size << 10));
        const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();
        for (std::size_t index = 0; index < size; ++index) {
            Registration registration = device_registration(index);
            registration.registered_at = now;
            registration.last_seen = now;
            writer.add(registration);
        }
        writer.commit();
    }
    auto options = LmdbStoreOptions::from(default_xaps_settings());
    options.path = dir.path();
    const auto start = Clock::now();
    const std::size_t upgraded = open_lmdb_store(options)->size();
    const double seconds = duration<double>(Clock::now() - start).count();
    if (upgraded != size) {
        throw Error(ErrorKind::internal, "the upgrade kept " + std::to_string(upgraded) + " of " +
                                             std::to_string(size) + " registrations");
    }
    return seconds;
}

} // namespace

int main(int argc, char **argv) {
    require_root("bench-scale");
    const Options options = parse_options(argc, argv);
    try {
        std::vector<Costs> costs;
        for (std::size_t size : options.sizes) {
            costs.push_back(measure(size, options.lookups));
        }
        if (costs.size() == 2) {
            // "Independent of the store size": within 50% from 1k to 1M.
            const double ratio = costs[1].notify_us / costs[0].notify_us;
            report("5 scale",
                   "NOTIFY lookup cost " + size_name(options.sizes[1]) + " / " +
                       size_name(options.sizes[0]),
                   ratio, "x", "<= 1.5x", at_most(ratio, 1.5));
            report("5 scale",
                   "find_user() cost " + size_name(options.sizes[1]) + " / " +
                       size_name(options.sizes[0]),
                   costs[1].find_user_us / costs[0].find_user_us, "x");
        }
        const std::size_t large = options.sizes.back();
        report("5 scale", "upgrade from schema version 1 at " + size_name(large),
               upgrade_seconds(large), "s");
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-scale failed: %s\n", error.what());
        report_failure("5 scale", "run", error.what());
        return 1;
    }
    return 0;
}
