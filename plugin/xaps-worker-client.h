// The mail processes' connection to xaps-worker: asynchronous, on Dovecot's
// ioloop and connection API, speaking common/worker-protocol.h.
//
// One client per worker socket per process, kept across mail users
// (push_notification's cleanup() runs after every user in 2.3) and closed by
// the plugin's deinit. Its connection opens at the first request and closes
// after 30 s with nothing in flight, so that idle sessions do not count
// against the worker's client_limit. Nothing here ever blocks the process: requests are
// written to a bounded buffer and replies arrive as ioloop callbacks.
#pragma once

#include "worker-protocol.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace xaps::plugin {

// Gets the final reply of a request (OK or FAIL; ROW replies go to a RowHandler).
using ReplyHandler = std::function<void(const protocol::Reply &reply)>;
// Gets each ROW reply of a request (LIST, STATUS, TEST), in order, before its
// final reply. Without one, rows are skipped.
using RowHandler = std::function<void(const protocol::Reply &row)>;

class WorkerClient {
public:
    using RequestId = std::uint64_t;

    // hello: what this process announces to a worker that understands HELLO
    // (protocol minor 2), right after each handshake; doveadm's admin
    // client announces nothing.
    explicit WorkerClient(std::string socket_path,
                          std::optional<protocol::Hello> hello = std::nullopt);
    ~WorkerClient(); // flush_and_close()
    WorkerClient(const WorkerClient &) = delete;
    WorkerClient &operator=(const WorkerClient &) = delete;

    const std::string &socket_path() const noexcept;

    // Sends a request. on_reply is called exactly once, later, from the
    // ioloop: with the worker's reply, or with a FAIL of kind `unavailable`
    // when the connection is lost or nothing (no reply, no ROW) came within
    // `timeout`.
    // Throws Error(unavailable) when the request cannot be sent now (the
    // worker is unreachable, the output buffer is full); on_reply is then
    // never called. on_row, if set, gets the request's ROW replies first.
    RequestId send(const protocol::Request &request, std::chrono::milliseconds timeout,
                   ReplyHandler on_reply, RowHandler on_row = {});
    // Forgets a request sent with send(): its handler will not be called.
    void cancel(RequestId id) noexcept;
    // Fire and forget. Returns false when the notification was dropped
    // because the worker is unreachable or the output buffer is full.
    bool notify(const protocol::Notify &notify) noexcept;
    // True when the last attempt to connect was refused by the socket's
    // permissions (EACCES): this process's user may not reach the worker.
    bool connect_refused() const noexcept;
    // Writes what is still buffered, waiting at most `limit` for the socket,
    // then disconnects. Pending requests are forgotten, not answered.
    void flush_and_close(std::chrono::milliseconds limit) noexcept;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// The process-wide client of the worker at socket_path, created on first use.
// It announces this process's Dovecot service and process_limit (HELLO), so
// that the worker can tell when the mail services' limits add up to more
// than its client_limit; a process that runs outside Dovecot's master
// (dovecot-lda from an MTA) has no limit to announce.
WorkerClient &worker_client(const std::string &socket_path);
// Flushes pending notifications without waiting for replies and closes every
// client: the plugin's deinit calls it.
void worker_clients_shutdown() noexcept;

} // namespace xaps::plugin
