#include "worker-connection.h"

#include "dovecot-cxx.h"
#include "worker-log.h"
#include "worker-events.h"
#include "worker-protocol.h"

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace xaps {

namespace {

// Allocated with i_new and handed to Dovecot: trivial, `conn` first.
struct worker_connection {
    struct connection conn;
    std::uint64_t serial;
    protocol::PeerRole role;
};

// One server per process (the service's single WorkerServer); the C
// callbacks below reach it through these.
struct ServerState {
    struct connection_list *list = nullptr;
    RequestHandler *handler = nullptr;
    std::string admin_listener;
    std::uint64_t next_serial = 1;
    // Replies that arrive after the peer left (TEST waits on Apple) find the
    // connection gone here and are dropped.
    std::unordered_map<std::uint64_t, struct worker_connection *> live;
    // A LIST waiting for its peer to read: continued from the connection's
    // flush callback, dropped with the connection.
    std::unordered_map<std::uint64_t, std::function<void()>> waiting_for_room;
};
ServerState state;

void send_reply(struct worker_connection *wconn, const protocol::Reply &reply) {
    std::string line = protocol::encode_reply(reply);
    o_stream_nsend(wconn->conn.output, line.data(), line.size());
}

RequestHandler::Reply reply_to(std::uint64_t serial) {
    return [serial](protocol::Reply reply) {
        auto it = state.live.find(serial);
        if (it != state.live.end()) {
            send_reply(it->second, reply);
        }
    };
}

// A peer that sends requests and never reads the replies (a stuck or hostile
// process that can reach the socket) would make the worker buffer replies
// without bound: output_max_size is unlimited so that no reply is ever cut.
// Past this much unsent output the connection stops reading requests until
// the peer has taken most of it (tests/e2e/test-e2e-security.cc,
// APeerThatNeverReadsCannotGrowTheWorker).
constexpr std::size_t output_high_water = 2 * protocol::max_line_length;

bool below_low_water(const struct connection *conn) {
    return o_stream_get_buffer_used_size(conn->output) < output_high_water / 2;
}

// Continues a waiting LIST once the peer has taken most of the output, and
// reads requests again once no LIST waits: requests sent after a LIST are
// read, and answered, after it.
int worker_connection_flush(void *context) noexcept {
    auto *wconn = static_cast<struct worker_connection *>(context);
    auto *conn = &wconn->conn;
    int ret = o_stream_flush(conn->output);
    if (ret < 0) {
        state.waiting_for_room.erase(wconn->serial);
    } else if (below_low_water(conn)) {
        if (auto waiting = state.waiting_for_room.find(wconn->serial);
            waiting != state.waiting_for_room.end()) {
            std::function<void()> resume = std::move(waiting->second);
            state.waiting_for_room.erase(waiting);
            try {
                resume();
            } catch (...) {
                // RequestHandler answers its own failures.
            }
            ret = o_stream_flush(conn->output);
        }
    }
    // On an error too: reading again lets the connection API notice the
    // peer is gone and destroy the connection.
    if (conn->io == nullptr && !conn->disconnected &&
        !state.waiting_for_room.contains(wconn->serial) && (ret < 0 || below_low_water(conn))) {
        connection_input_resume(conn);
        // Requests already read wait in the input buffer.
        i_stream_set_input_pending(conn->input, TRUE);
    }
    return ret;
}

void wait_for_output_room(struct worker_connection *wconn) {
    connection_input_halt(&wconn->conn);
    o_stream_set_flush_callback(wconn->conn.output, worker_connection_flush, wconn);
    o_stream_set_flush_pending(wconn->conn.output, TRUE);
}

ReplyFlow flow_of(std::uint64_t serial) {
    ReplyFlow flow;
    flow.has_room = [serial] {
        auto it = state.live.find(serial);
        return it != state.live.end() &&
               o_stream_get_buffer_used_size(it->second->conn.output) < output_high_water;
    };
    flow.when_room = [serial](std::function<void()> resume) {
        auto it = state.live.find(serial);
        if (it == state.live.end() || it->second->conn.disconnected) {
            return; // the peer left: the LIST ends here
        }
        state.waiting_for_room[serial] = std::move(resume);
        wait_for_output_room(it->second);
    };
    return flow;
}

// Returns 0 (stop processing input for now) when the peer must read first.
int halt_input_while_output_full(struct worker_connection *wconn) {
    struct connection *conn = &wconn->conn;
    if (o_stream_get_buffer_used_size(conn->output) < output_high_water) {
        return 1;
    }
    wait_for_output_room(wconn);
    return 0;
}

int worker_connection_input_args(struct connection *conn, const char *const *args) noexcept {
    auto *wconn = reinterpret_cast<struct worker_connection *>(conn);
    std::vector<std::string> fields;
    try {
        for (; *args != nullptr; args++) {
            fields.emplace_back(*args);
        }
        protocol::RequestLine line = protocol::decode_request(fields);
        state.handler->handle(line, wconn->role,
                              observe_registration(line, reply_to(wconn->serial)),
                              flow_of(wconn->serial));
    } catch (const Error &e) {
        // A bad line gets an error reply and the connection goes on.
        send_reply(wconn, protocol::Reply::fail(protocol::request_id_of(fields), e));
    } catch (const std::exception &e) {
        e_error(worker_event(), "worker connection %s: %s", conn->name, e.what());
        return -1;
    } catch (...) {
        return -1;
    }
    if (state.waiting_for_room.contains(wconn->serial)) {
        return 0; // a LIST is streaming: it halted the input
    }
    return halt_input_while_output_full(wconn);
}

void worker_connection_destroy(struct connection *conn) noexcept {
    auto *wconn = reinterpret_cast<struct worker_connection *>(conn);
    state.live.erase(wconn->serial);
    state.waiting_for_room.erase(wconn->serial);
    connection_deinit(conn);
    i_free(wconn);
    master_service_client_connection_destroyed(master_service);
}

const struct connection_vfuncs worker_connection_vfuncs = [] {
    struct connection_vfuncs v = {};
    v.destroy = worker_connection_destroy;
    v.input_args = worker_connection_input_args;
    return v;
}();

const struct connection_settings worker_connection_settings = [] {
    struct connection_settings s = {};
    s.service_name_in = protocol::service_name;
    s.service_name_out = protocol::service_name;
    s.major_version = protocol::major_version;
    s.minor_version = protocol::minor_version;
    s.input_max_size = protocol::max_line_length;
    s.output_max_size = SIZE_MAX;
    s.client = false;
    return s;
}();

// The master names a unix listener by its path as configured (relative to
// base_dir, or absolute); the settings may spell it either way.
std::string_view socket_basename(std::string_view path) {
    const auto slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

} // namespace

WorkerServer::WorkerServer(RequestHandler &handler, std::string_view admin_socket_path) {
    state.handler = &handler;
    state.admin_listener = std::string(socket_basename(admin_socket_path));
    state.list = connection_list_init(&worker_connection_settings, &worker_connection_vfuncs);
}

WorkerServer::~WorkerServer() {
    connection_list_deinit(&state.list);
    state.live.clear();
    state.waiting_for_room.clear();
    state.handler = nullptr;
}

void WorkerServer::accept(struct master_service_connection *master_connection) {
    master_service_client_connection_accept(master_connection);
    auto *wconn = i_new(struct worker_connection, 1);
    wconn->serial = state.next_serial++;
    // Only the admin listener grants admin commands: a listener an admin
    // adds under any other name serves mail processes.
    wconn->role = socket_basename(master_connection->name) == state.admin_listener
                      ? protocol::PeerRole::admin
                      : protocol::PeerRole::mail;
    connection_init_server(state.list, &wconn->conn, master_connection->name, master_connection->fd,
                           master_connection->fd);
    state.live.emplace(wconn->serial, wconn);
}

std::size_t WorkerServer::connection_count() const {
    return state.live.size();
}

} // namespace xaps
