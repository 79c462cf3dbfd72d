// Serves worker protocol requests: the part of the worker that knows what
// REGISTER, NOTIFY, HELLO, LIST, PURGE, STATUS, TEST and IMPORT mean.
// Transport-free (worker-connection.* feeds it lines from Dovecot's connection
// API), so it is unit tested with a real store and scheduler but no sockets.
#pragma once

#include "group-commit.h"
#include "push-gate.h"
#include "push-scheduler.h"
#include "registration-store.h"
#include "store-writes.h"
#include "worker-protocol.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace xaps {

struct RequestHandlerSettings {
    // The settings' values for the handler.
    static RequestHandlerSettings from(const XapsSettings &settings) {
        RequestHandlerSettings handler;
        handler.subtopics = settings.subtopics;
        return handler;
    }

    std::vector<std::string> subtopics; // xaps_subtopics
};

// How a long answer (LIST) keeps pace with a peer that reads slowly or not at
// all: its rows are written a page at a time while the peer has room, so the
// worker's memory holds a page and the transport's buffer, whatever the
// store's size. Empty functions: no flow control, every row at once.
struct ReplyFlow {
    // False while the peer has so much unread that further rows must wait.
    std::function<bool()> has_room;
    // Calls `resume` once, from the event loop, when has_room() may be true
    // again; drops it (never calls it) when the peer goes away.
    std::function<void(std::function<void()> resume)> when_room;

    explicit operator bool() const noexcept { return has_room && when_room; }
};

class RequestHandler {
public:
    using Reply = std::function<void(protocol::Reply)>;
    using StatusRows = std::function<std::vector<std::pair<std::string, std::string>>()>;

    // Registrations one LIST page looks at.
    static constexpr std::size_t list_page_rows = 256;

    // REGISTERs and IMPORTs go through group_commit (one durable
    // transaction per event-loop turn), PURGE through `writes` (answered
    // after its write); LIST and TEST read the store directly. REGISTER
    // and TEST need an open `gate`, and REGISTER answers with its topic.
    RequestHandler(RegistrationStore &store, StoreWrites &writes, GroupCommit &group_commit,
                   PushScheduler &scheduler, const PushGate &gate, RequestHandlerSettings settings,
                   StatusRows status_rows, std::function<std::int64_t()> unix_now);
    // PURGE writes to `store` synchronously (LocalStoreWrites).
    RequestHandler(RegistrationStore &store, GroupCommit &group_commit, PushScheduler &scheduler,
                   const PushGate &gate, RequestHandlerSettings settings, StatusRows status_rows,
                   std::function<std::int64_t()> unix_now);

    // Answers through `reply`: zero or more ROW replies, then exactly one OK
    // or FAIL. Most requests are answered before handle() returns; REGISTER
    // and IMPORT (after their commit), TEST (after Apple) and a LIST that
    // waits on `flow` are answered later from the event loop, so `reply`
    // must stay callable (it should drop the reply when the peer is gone).
    // A request that `role`'s listener does not serve is answered FAIL
    // forbidden. Never throws.
    void handle(const protocol::RequestLine &line, protocol::PeerRole role, const Reply &reply,
                const ReplyFlow &flow = {}) noexcept;

    // Gets each HELLO (a mail process's service and its process_limit)
    // before it is answered OK. Without one, HELLO is only answered.
    using HelloObserver = std::function<void(const protocol::Hello &hello)>;
    void set_hello_observer(HelloObserver observer) { hello_observer_ = std::move(observer); }

    // Serves MIGRATE (StoreMigrator::handle, store-migration.h). Without
    // one there is no shared store, and MIGRATE is answered FAIL config.
    using MigrateHandler =
        std::function<void(std::uint64_t id, const protocol::Migrate &request, const Reply &reply)>;
    void set_migrate_handler(MigrateHandler handler) { migrate_handler_ = std::move(handler); }

private:
    struct ListProgress {
        std::uint64_t id;
        std::string user; // empty: every user
        std::string after;
        std::size_t count = 0;
    };

    void handle_register(std::uint64_t id, const protocol::Register &request, const Reply &reply);
    // Writes pages while `flow` has room, then waits for it.
    void continue_list(const std::shared_ptr<ListProgress> &progress, const Reply &reply,
                       const ReplyFlow &flow);
    void handle_purge(std::uint64_t id, const protocol::Purge &request, const Reply &reply);
    void handle_status(std::uint64_t id, const Reply &reply);
    void handle_test(std::uint64_t id, const protocol::Test &request, const Reply &reply);
    void handle_import(std::uint64_t id, const protocol::Import &request, const Reply &reply);
    // Throws Error(unavailable) with the gate's reason while it is closed.
    void require_push_available() const;

    RegistrationStore &store_;
    std::unique_ptr<StoreWrites> own_writes_; // with the constructor without `writes`
    StoreWrites &writes_;
    GroupCommit &group_commit_;
    PushScheduler &scheduler_;
    const PushGate &gate_;
    RequestHandlerSettings settings_;
    StatusRows status_rows_;
    std::function<std::int64_t()> unix_now_;
    HelloObserver hello_observer_;
    MigrateHandler migrate_handler_;
};

// The checks every registration passes before it is stored, whoever sent it
// (the IMAP parser checks the same and more, with the client's words).
// Throws Error(invalid_input).
void validate_registration(const Registration &registration,
                           const std::vector<std::string> &subtopics);

} // namespace xaps
