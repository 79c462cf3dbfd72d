#include "xaps-worker-client.h"

#include "dovecot-cxx.h"
#include "xaps-event.h"
#include "xaps-error.h"

#include <cerrno>
#include <cstring>
#include <map>
#include <sys/socket.h>
#include <sys/time.h>
#include <vector>

namespace xaps::plugin {

namespace {

// The master may have throttled a worker that died while starting; a new
// connection makes it respawn, so a failed connect is tried once more.
constexpr unsigned connect_attempts = 2;
// Room for two maximal lines: a worker that stops reading costs bounded memory.
constexpr std::size_t output_buffer_limit = 2 * protocol::max_line_length;
// A connection with nothing in flight for this long is closed: the worker's
// client_limit then counts the processes that are busy with mail, not every
// idle IMAP session of the server. Connecting again costs a local connect()
// and the VERSION exchange.
constexpr std::chrono::milliseconds idle_disconnect_after(30000);

} // namespace

// Dovecot's connection API hands its callbacks only the struct connection
// pointer: it comes first so that the owner can be found from it.
struct xaps_worker_connection {
    struct connection conn;
    WorkerClient::Impl *impl;
};

struct WorkerClient::Impl {
    struct Pending {
        Impl *impl = nullptr;
        RequestId id = 0;
        ReplyHandler handler;
        RowHandler row_handler;
        struct timeout *to = nullptr;
    };

    std::string socket_path;
    std::optional<protocol::Hello> hello;
    struct event *event = nullptr;
    struct connection_list *list = nullptr;
    xaps_worker_connection *wconn = nullptr;
    RequestId next_id = 1;
    struct timeout *idle_to = nullptr;
    bool connect_refused = false;         // the last connect() failed on the socket's permissions
    std::map<RequestId, Pending> pending; // node-based: Pending addresses are stable

    Impl(std::string path, std::optional<protocol::Hello> announcement);
    ~Impl();

    bool connected() const { return !wconn->conn.disconnected; }
    // Empty when connected, else why not.
    std::string connect();
    void write_line(const std::string &line);
    int on_input(const char *const *args);
    void on_handshake();
    void on_destroy();
    void on_timeout(RequestId id);
    // (Re)starts the idle countdown after traffic.
    void note_activity();
    void on_idle();
    void finish(std::map<RequestId, Pending>::iterator it, const protocol::Reply &reply);
    void forget_pending() noexcept;
    void fail_all(const std::string &why);
    void flush_output(std::chrono::milliseconds limit) noexcept;
    void close(std::chrono::milliseconds flush_limit) noexcept;
};

namespace {

WorkerClient::Impl *impl_of(struct connection *conn) {
    return reinterpret_cast<xaps_worker_connection *>(conn)->impl;
}

void connection_destroyed(struct connection *conn) noexcept {
    try {
        impl_of(conn)->on_destroy();
    } catch (...) {
        connection_disconnect(conn);
    }
}

void connection_handshake_ready(struct connection *conn) noexcept {
    try {
        impl_of(conn)->on_handshake();
    } catch (...) {
    }
}

int connection_input_args(struct connection *conn, const char *const *args) noexcept {
    try {
        return impl_of(conn)->on_input(args);
    } catch (...) {
        return -1;
    }
}

void connection_idle(void *context) noexcept {
    try {
        static_cast<WorkerClient::Impl *>(context)->on_idle();
    } catch (...) {
    }
}

void request_timed_out(void *context) noexcept {
    auto *pending = static_cast<WorkerClient::Impl::Pending *>(context);
    try {
        pending->impl->on_timeout(pending->id);
    } catch (...) {
    }
}

template <typename Handler>
void call_handler(const Handler &handler, const protocol::Reply &reply, struct event *event) {
    try {
        handler(reply);
    } catch (const std::exception &e) {
        e_error(event, "reply handler failed: %s", e.what());
    } catch (...) {
        e_error(event, "reply handler failed");
    }
}

std::string errno_message(int error_number, const std::string &what) {
    return what + " failed: " + std::strerror(error_number);
}

} // namespace

WorkerClient::Impl::Impl(std::string path, std::optional<protocol::Hello> announcement)
    : socket_path(std::move(path)), hello(std::move(announcement)) {
    event = dovecot::create_event(nullptr);

    struct connection_settings set {};
    set.service_name_in = protocol::service_name;
    set.service_name_out = protocol::service_name;
    set.major_version = protocol::major_version;
    set.minor_version = protocol::minor_version;
    set.input_max_size = protocol::max_line_length;
    set.output_max_size = output_buffer_limit;
    set.client = TRUE;
    struct connection_vfuncs vfuncs {};
    vfuncs.destroy = connection_destroyed;
    vfuncs.input_args = connection_input_args;
    vfuncs.handshake_ready = connection_handshake_ready;
    list = connection_list_init(&set, &vfuncs);

    wconn = i_new(xaps_worker_connection, 1);
    wconn->impl = this;
    wconn->conn.event_parent = event;
    connection_init_client_unix(list, &wconn->conn, socket_path.c_str());
}

WorkerClient::Impl::~Impl() {
    close(std::chrono::milliseconds(0));
}

std::string WorkerClient::Impl::connect() {
    if (connected()) {
        return {};
    }
    std::string error;
    for (unsigned attempt = 0; attempt < connect_attempts; attempt++) {
        if (connection_client_connect(&wconn->conn) == 0) {
            connect_refused = false;
            e_debug(event, "connected to the worker at %s", socket_path.c_str());
            return {};
        }
        int error_number = errno;
        error = errno_message(error_number, "connect(" + socket_path + ")");
        connect_refused = error_number == EACCES || error_number == EPERM;
        if (connect_refused) {
            break; // permissions do not change between attempts
        }
    }
    return error;
}

void WorkerClient::Impl::write_line(const std::string &line) {
    struct ostream *output = wconn->conn.output;
    if (o_stream_get_buffer_avail_size(output) < line.size()) {
        throw Error(ErrorKind::unavailable, "the worker is not reading: output buffer full");
    }
    o_stream_nsend(output, line.data(), line.size());
}

int WorkerClient::Impl::on_input(const char *const *args) {
    std::vector<std::string> fields;
    for (const char *const *arg = args; *arg != nullptr; arg++) {
        fields.emplace_back(*arg);
    }
    protocol::Reply reply;
    try {
        reply = protocol::decode_reply(fields);
    } catch (const Error &e) {
        e_error(event, "the worker sent an invalid reply: %s", e.what());
        return -1;
    }
    auto it = pending.find(reply.id);
    if (reply.status == protocol::ReplyStatus::row) {
        if (it != pending.end()) {
            // The timeout bounds the worker's silence, not a long listing.
            timeout_reset(it->second.to);
            if (it->second.row_handler) {
                call_handler(it->second.row_handler, reply, event);
            }
        }
        return 1;
    }
    if (it != pending.end()) {
        finish(it, reply);
    } else if (reply.status == protocol::ReplyStatus::fail) {
        // A notification (nobody waits for those) or a request given up on.
        e_warning(event, "the worker refused request %llu: %s",
                  static_cast<unsigned long long>(reply.id), reply.error().what());
    }
    return 1;
}

// Sent once the worker's VERSION line is in, since only then is its minor
// version known: an older worker would answer HELLO with FAIL invalid. Nobody
// waits for the OK, which on_input() drops as it drops a notification's.
void WorkerClient::Impl::on_handshake() {
    if (!hello || wconn->conn.minor_version < protocol::hello_minor_version) {
        return;
    }
    try {
        write_line(protocol::encode_request(next_id++, *hello));
    } catch (const Error &e) {
        e_debug(event, "HELLO not sent: %s", e.what());
    }
}

void WorkerClient::Impl::note_activity() {
    if (idle_to != nullptr) {
        timeout_reset(idle_to);
    } else {
        idle_to = timeout_add_to(wconn->conn.ioloop,
                                 static_cast<unsigned int>(idle_disconnect_after.count()),
                                 connection_idle, static_cast<void *>(this));
    }
}

void WorkerClient::Impl::on_idle() {
    timeout_remove(&idle_to);
    if (!connected()) {
        return;
    }
    if (!pending.empty() || o_stream_get_buffer_used_size(wconn->conn.output) > 0) {
        note_activity();
        return;
    }
    e_debug(event, "closing the idle connection to the worker");
    connection_disconnect(&wconn->conn);
}

void WorkerClient::Impl::on_destroy() {
    timeout_remove(&idle_to);
    const char *reason = connection_disconnect_reason(&wconn->conn);
    std::string why = std::string("connection to the worker lost: ") + reason;
    connection_disconnect(&wconn->conn);
    if (pending.empty()) {
        e_debug(event, "%s", why.c_str());
    } else {
        e_warning(event, "%s", why.c_str());
    }
    fail_all(why);
}

void WorkerClient::Impl::on_timeout(RequestId id) {
    auto it = pending.find(id);
    if (it == pending.end()) {
        return;
    }
    e_warning(event, "no reply from the worker to request %llu in time",
              static_cast<unsigned long long>(id));
    finish(it,
           protocol::Reply::fail(id, ErrorKind::unavailable, "no reply from the worker in time"));
}

void WorkerClient::Impl::finish(std::map<RequestId, Pending>::iterator it,
                                const protocol::Reply &reply) {
    ReplyHandler handler = std::move(it->second.handler);
    timeout_remove(&it->second.to);
    pending.erase(it);
    note_activity();
    call_handler(handler, reply, event);
}

void WorkerClient::Impl::forget_pending() noexcept {
    for (auto &[id, request] : pending) {
        timeout_remove(&request.to);
    }
    pending.clear();
}

void WorkerClient::Impl::fail_all(const std::string &why) {
    std::map<RequestId, Pending> failed;
    failed.swap(pending);
    for (auto &[id, request] : failed) {
        timeout_remove(&request.to);
        call_handler(request.handler, protocol::Reply::fail(id, ErrorKind::unavailable, why),
                     event);
    }
}

void WorkerClient::Impl::flush_output(std::chrono::milliseconds limit) noexcept {
    struct ostream *output = wconn->conn.output;
    if (o_stream_flush(output) != 0 || limit.count() <= 0) {
        return;
    }
    // Bounded blocking writes: this runs at process exit, when no ioloop
    // will write the rest for us.
    int fd = o_stream_get_fd(output);
    struct timeval send_timeout {};
    send_timeout.tv_sec = static_cast<time_t>(limit.count() / 1000);
    send_timeout.tv_usec = static_cast<suseconds_t>((limit.count() % 1000) * 1000);
    net_set_nonblock(fd, FALSE);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout)) < 0) {
        net_set_nonblock(fd, TRUE);
        return;
    }
    auto deadline = std::chrono::steady_clock::now() + limit;
    size_t before = o_stream_get_buffer_used_size(output);
    while (before > 0 && o_stream_flush(output) >= 0) {
        size_t after = o_stream_get_buffer_used_size(output);
        if (after >= before || std::chrono::steady_clock::now() >= deadline) {
            before = after;
            break; // no progress within the send timeout, or out of time
        }
        before = after;
    }
    if (before > 0) {
        e_warning(event, "%zu bytes for the worker were not written before exit", before);
    }
}

void WorkerClient::Impl::close(std::chrono::milliseconds flush_limit) noexcept {
    if (wconn == nullptr) {
        return;
    }
    forget_pending();
    timeout_remove(&idle_to);
    if (connected()) {
        flush_output(flush_limit);
    }
    connection_deinit(&wconn->conn);
    i_free(wconn);
    connection_list_deinit(&list);
    event_unref(&event);
}

WorkerClient::WorkerClient(std::string socket_path, std::optional<protocol::Hello> hello)
    : impl_(std::make_unique<Impl>(std::move(socket_path), std::move(hello))) {}

WorkerClient::~WorkerClient() = default;

const std::string &WorkerClient::socket_path() const noexcept {
    return impl_->socket_path;
}

WorkerClient::RequestId WorkerClient::send(const protocol::Request &request,
                                           std::chrono::milliseconds timeout, ReplyHandler on_reply,
                                           RowHandler on_row) {
    Impl &impl = *impl_;
    if (impl.wconn == nullptr) {
        throw Error(ErrorKind::unavailable, "the worker client is closed");
    }
    if (std::string error = impl.connect(); !error.empty()) {
        throw Error(ErrorKind::unavailable, error);
    }
    RequestId id = impl.next_id++;
    impl.write_line(protocol::encode_request(id, request));
    auto [it, inserted] =
        impl.pending.emplace(id, Impl::Pending{&impl, id, std::move(on_reply), std::move(on_row)});
    it->second.to =
        timeout_add_to(impl.wconn->conn.ioloop, static_cast<unsigned int>(timeout.count()),
                       request_timed_out, static_cast<void *>(&it->second));
    impl.note_activity();
    return id;
}

void WorkerClient::cancel(RequestId id) noexcept {
    auto it = impl_->pending.find(id);
    if (it != impl_->pending.end()) {
        timeout_remove(&it->second.to);
        impl_->pending.erase(it);
    }
}

bool WorkerClient::connect_refused() const noexcept {
    return impl_->connect_refused;
}

bool WorkerClient::notify(const protocol::Notify &notify) noexcept {
    Impl &impl = *impl_;
    try {
        if (impl.wconn == nullptr) {
            return false;
        }
        if (std::string error = impl.connect(); !error.empty()) {
            e_debug(impl.event, "notification dropped: %s", error.c_str());
            return false;
        }
        impl.write_line(protocol::encode_request(impl.next_id++, notify));
        impl.note_activity();
        return true;
    } catch (const std::exception &e) {
        e_debug(impl.event, "notification dropped: %s", e.what());
    } catch (...) {
    }
    return false;
}

void WorkerClient::flush_and_close(std::chrono::milliseconds limit) noexcept {
    impl_->close(limit);
}

namespace {

// Never destroyed by a static destructor: on exit paths that skip the
// plugin's deinit (i_fatal), closing would call into a deinitialized libdovecot.
std::map<std::string, std::unique_ptr<WorkerClient>> &clients() {
    static auto *by_socket_path = new std::map<std::string, std::unique_ptr<WorkerClient>>;
    return *by_socket_path;
}

// How long the plugin's deinit may wait for the worker to take buffered
// notifications.
constexpr std::chrono::milliseconds exit_flush_limit(1000);

// The configured name, not the binary's: two services may run the same
// binary (imap and an imap-other { executable = imap }), each with its own
// process_limit. A process outside the master has a limit of 0.
std::optional<protocol::Hello> this_process_hello() {
    const unsigned process_limit = master_service_get_process_limit(master_service);
    const char *service = master_service_get_configured_name(master_service);
    if (process_limit == 0 || service == nullptr || *service == '\0') {
        return std::nullopt;
    }
    return protocol::Hello{service, process_limit};
}

} // namespace

WorkerClient &worker_client(const std::string &socket_path) {
    auto &all = clients();
    auto it = all.find(socket_path);
    if (it == all.end()) {
        it = all.emplace(socket_path,
                         std::make_unique<WorkerClient>(socket_path, this_process_hello()))
                 .first;
    }
    return *it->second;
}

void worker_clients_shutdown() noexcept {
    for (auto &[path, client] : clients()) {
        client->flush_and_close(exit_flush_limit);
    }
    clients().clear();
}

} // namespace xaps::plugin
