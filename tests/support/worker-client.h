// A blocking client of the xaps worker socket, speaking the worker protocol
// (common/worker-protocol.h) the way the plugin and doveadm do; tests use it
// to look into the registration store of a running worker.
#pragma once

#include "line-connection.h"
#include "registration.h"
#include "worker-protocol.h"

#include <cstdint>
#include <string>
#include <vector>

namespace xaps::test {

class WorkerClient {
public:
    // Connects and exchanges the VERSION handshake; throws xaps::Error when the
    // worker does not answer it within the timeout or speaks another major version.
    explicit WorkerClient(const std::string &socket_path,
                          Milliseconds timeout = default_io_timeout);
    // The same over a connection made elsewhere (as another user, say).
    explicit WorkerClient(LineConnection connection, Milliseconds timeout = default_io_timeout);

    // The fields of the worker's VERSION line.
    const std::vector<std::string> &server_version() const { return server_version_; }

    // Sends one request and returns its replies: ROWs, then the final OK or FAIL.
    std::vector<protocol::Reply> request(const protocol::Request &request);
    // LIST [user]; throws the worker's error on FAIL.
    std::vector<Registration> list(const std::string &user = {});

private:
    LineConnection connection_;
    std::vector<std::string> server_version_;
    std::uint64_t last_id_ = 0;
};

} // namespace xaps::test
