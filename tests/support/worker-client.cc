#include "worker-client.h"

#include "tab-escape.h"
#include "xaps-error.h"

namespace xaps::test {

WorkerClient::WorkerClient(const std::string &socket_path, Milliseconds timeout)
    : WorkerClient(LineConnection::connect_unix(socket_path, timeout), timeout) {}

WorkerClient::WorkerClient(LineConnection connection, Milliseconds timeout)
    : connection_(std::move(connection)) {
    connection_.set_timeout(timeout);
    const std::vector<std::string> version{"VERSION", protocol::service_name,
                                           std::to_string(protocol::major_version),
                                           std::to_string(protocol::minor_version)};
    connection_.write_all(join_line(version));
    server_version_ = split_line(connection_.read_line());
    if (server_version_.size() != 4 || server_version_[0] != "VERSION" ||
        server_version_[1] != protocol::service_name ||
        server_version_[2] != std::to_string(protocol::major_version)) {
        throw Error(ErrorKind::invalid_input,
                    "unexpected handshake from the worker: " + join_line(server_version_));
    }
}

std::vector<protocol::Reply> WorkerClient::request(const protocol::Request &request) {
    const std::uint64_t id = ++last_id_;
    connection_.write_all(protocol::encode_request(id, request));
    std::vector<protocol::Reply> replies;
    for (;;) {
        protocol::Reply reply = protocol::decode_reply(split_line(connection_.read_line()));
        if (reply.id != id) {
            throw Error(ErrorKind::invalid_input, "reply for request " + std::to_string(reply.id) +
                                                      ", expected " + std::to_string(id));
        }
        bool done = reply.status != protocol::ReplyStatus::row;
        replies.push_back(std::move(reply));
        if (done) {
            return replies;
        }
    }
}

std::vector<Registration> WorkerClient::list(const std::string &user) {
    std::vector<protocol::Reply> replies = request(protocol::List{user});
    if (replies.back().status == protocol::ReplyStatus::fail) {
        throw replies.back().error();
    }
    std::vector<Registration> registrations;
    for (std::size_t i = 0; i + 1 < replies.size(); i++) {
        registrations.push_back(protocol::registration_from_fields(replies[i].fields));
    }
    return registrations;
}

} // namespace xaps::test
