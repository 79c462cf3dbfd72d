// The socket side of the worker protocol: accepts connections handed over by
// the Dovecot master, reads request lines with Dovecot's connection API (which
// does the VERSION handshake and tab unescaping), feeds them to the
// RequestHandler and writes its replies back.
#pragma once

#include "request-handler.h"

#include <string_view>

struct master_service_connection;

namespace xaps {

class WorkerServer {
public:
    // A connection that came in on the listener named like admin_socket_path
    // (xaps_admin_socket_path) is an admin peer; every other one a mail peer.
    WorkerServer(RequestHandler &handler, std::string_view admin_socket_path);
    ~WorkerServer();
    WorkerServer(const WorkerServer &) = delete;
    WorkerServer &operator=(const WorkerServer &) = delete;

    // Takes over the master's connection fd.
    void accept(struct master_service_connection *master_connection);
    std::size_t connection_count() const;
};

} // namespace xaps
