// What every `doveadm xaps` command shares: the way to the running worker,
// doveadm-style error reporting and exit codes, and output formatting.
#pragma once

#include "worker-protocol.h"
#include "xaps-error.h"
#include "xaps-settings.h"
#include "xaps-worker-client.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

struct ioloop;

namespace xaps::doveadm {

// How long a command waits for the worker's reply. TEST waits for Apple,
// including the worker's own retries.
inline constexpr std::chrono::milliseconds request_timeout{10'000};
inline constexpr std::chrono::milliseconds test_timeout{60'000};

// The xaps_* settings of doveadm's global plugin { } (the worker reads the
// same). Throws Error(config) for unparsable values.
XapsSettings read_settings();

// The worker's admin socket (xaps_admin_socket_path against base_dir): every
// doveadm xaps command that talks to the worker is an admin command. Throws
// like read_settings().
std::string admin_socket_path();

// A connection to the worker for one command, on a private ioloop: doveadm
// may run the command from inside its own ioloop (doveadm-server), which must
// not be run recursively. Create, send or call, destroy; not reentrant.
class WorkerSession {
public:
    WorkerSession();
    ~WorkerSession();
    WorkerSession(const WorkerSession &) = delete;
    WorkerSession &operator=(const WorkerSession &) = delete;

    // Sends one request and waits for its final reply (OK or FAIL), handing
    // its rows to on_row first. A lost connection or no reply within
    // `timeout` comes back as FAIL unavailable. Throws Error(unavailable)
    // when the worker cannot be reached at all.
    protocol::Reply call(const protocol::Request &request, std::chrono::milliseconds timeout,
                         const plugin::RowHandler &on_row = {});

    // Pipelining: send() queues a request (throws like call()), wait()
    // runs until every request sent has been answered.
    void send(const protocol::Request &request, std::chrono::milliseconds timeout,
              plugin::ReplyHandler on_reply);
    void wait();
    std::size_t outstanding() const { return outstanding_; }

private:
    struct ioloop *ioloop_ = nullptr;
    std::unique_ptr<plugin::WorkerClient> client_;
    std::size_t outstanding_ = 0;
};

// doveadm's exit code for an error of this kind: EX_TEMPFAIL when the worker
// is unreachable or busy, EX_USAGE for refused input, EX_NOUSER when the
// thing asked for does not exist, EX_CONFIG, EX_SOFTWARE.
int exit_code(ErrorKind kind);

// Logs the error on stderr (doveadm's log) and sets doveadm's exit code.
void report_error(const Error &error);
void report_error(int exit_code, const std::string &message);

// Runs a command's body, reporting what it throws the doveadm way: no
// exception crosses back into doveadm's C code.
void run_command(const char *name, const std::function<void()> &body) noexcept;

// Throws the error a FAIL reply carries; returns an OK reply's fields.
const std::vector<std::string> &ok_fields(const protocol::Reply &reply);

// A time of a registration row: "2026-11-28T08:14:36Z"; "-" for 0 (never).
std::string time_field(std::int64_t unix_seconds);

// A number field of an OK reply or row; Error(internal) when the worker sent
// something else.
std::uint64_t number_field(const std::vector<std::string> &fields, std::size_t index,
                           const char *what);

} // namespace xaps::doveadm
