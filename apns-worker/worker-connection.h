// The socket side of the worker protocol: accepts connections handed over by
// the Dovecot master, reads request lines with Dovecot's connection API (which
// does the VERSION handshake and tab unescaping), feeds them to the
// RequestHandler and writes its replies back.
#pragma once

#include "request-handler.h"

struct master_service_connection;

namespace xaps {

class WorkerServer {
public:
    explicit WorkerServer(RequestHandler &handler);
    ~WorkerServer();
    WorkerServer(const WorkerServer &) = delete;
    WorkerServer &operator=(const WorkerServer &) = delete;

    // Takes over the master's connection fd.
    void accept(struct master_service_connection *master_connection);
    std::size_t connection_count() const;
};

} // namespace xaps
