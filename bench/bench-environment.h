// What every benchmark starts from, as this build tree produced it: the
// plugin, the worker and the test PKI (paths from meson, as in tests/e2e),
// the mock APNs server and a Dovecot instance (tests/support's fixture), plus
// the few steps the benchmarks share (find the worker process, read its
// STATUS). Benchmarks run Dovecot and create users, so they need root.
#pragma once

#include "dovecot-instance.h"
#include "mock-apns-server.h"
#include "worker-client.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <sys/types.h>

#if !defined(XAPS_PLUGIN_PATH) || !defined(XAPS_WORKER_PATH) || !defined(XAPS_TEST_PKI_DIR)
#error "meson must define XAPS_PLUGIN_PATH, XAPS_WORKER_PATH and XAPS_TEST_PKI_DIR"
#endif

namespace xaps::bench {

using test::MockApnsConfig;
using test::MockApnsRequest;
using test::MockApnsResponse;
using test::MockApnsServer;

inline constexpr const char *plugin_path = XAPS_PLUGIN_PATH;
inline constexpr const char *worker_path = XAPS_WORKER_PATH;
inline constexpr const char *pki_dir = XAPS_TEST_PKI_DIR;

// The mock as fast as it gets, no request recording unless asked for. It
// checks the worker's client certificate as Apple does and also accepts
// requests without one: h2load, the reference load, cannot send one (a
// certificate costs once per TLS connection, not per request).
MockApnsConfig mock_config(std::uint32_t max_streams = 1000, bool record_requests = false);

// The worker (and, with_plugin, the mail plugin) for the mock on apns_port.
test::DovecotOptions dovecot_options(std::uint16_t apns_port, bool with_plugin);

// The worker process of this Dovecot: waits until it exists (or throws).
pid_t wait_for_worker_process(std::chrono::milliseconds timeout = std::chrono::seconds(10));

// The worker's STATUS rows as a map (counters such as pushes_delivered).
std::map<std::string, std::string> worker_status(test::WorkerClient &worker);
std::uint64_t status_number(const std::map<std::string, std::string> &status,
                            const std::string &key);

// Exits with a message unless running as root.
void require_root(const char *program);

// Starts the mock and returns the id of the thread that start() created: the
// server thread, whose CPU time shows whether the mock kept up.
pid_t start_mock_and_find_its_thread(MockApnsServer &mock);

} // namespace xaps::bench
