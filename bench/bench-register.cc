// bench-register: figure 4, durable registrations.
//
// 16 clients (threads, each with its own connection) send REGISTER to the
// worker one at a time, as the imap processes do for XAPPLEPUSHSERVICE, for a
// fixed time; every OK means the registration is on disk. Reported: the rate
// and the p99 of the round trips.
//
// The same clients then run against a model of the worker with group commit
// (apns-worker/store/group-commit.h on PollEventLoop, the same LMDB store on the
// same file system, the same protocol codec): what REGISTER would do once
// the request handler hands its puts to GroupCommit. And to explain both, the
// cost of one durable commit (a put() alone) on this disk.
#include "bench-devices.h"
#include "bench-environment.h"
#include "bench-report.h"
#include "group-commit.h"
#include "poll-event-loop.h"
#include "process-stats.h"
#include "registration-store.h"
#include "tab-escape.h"
#include "temporary-directory.h"
#include "worker-protocol.h"
#include "xaps-error.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using namespace xaps;
using namespace xaps::bench;
using Clock = std::chrono::steady_clock;

constexpr unsigned clients = 16;

struct Options {
    std::chrono::milliseconds duration{4000};
};

Options parse_options(int argc, char **argv) {
    Options options;
    if (argc == 3 && std::strcmp(argv[1], "--duration-ms") == 0) {
        options.duration = std::chrono::milliseconds(std::atoi(argv[2]));
    } else if (argc != 1) {
        std::fprintf(stderr, "usage: bench-register [--duration-ms N]\n");
        std::exit(2);
    }
    return options;
}

std::int64_t unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

Registration client_registration(unsigned client, std::size_t n) {
    Registration registration = device_registration(client * 1000000 + n);
    registration.user = "register" + std::to_string(client) + "-" + std::to_string(n);
    return registration;
}

struct RunResult {
    double per_second = 0;
    std::vector<double> latencies_ms;
};

// `clients` threads REGISTER one at a time on the socket for `duration`.
RunResult register_for(const std::string &socket_path, std::chrono::milliseconds duration) {
    std::mutex mutex;
    RunResult result;
    std::string failure;
    std::atomic<std::size_t> done{0};
    const auto start = Clock::now();
    const auto stop = start + duration;
    std::vector<std::thread> threads;
    for (unsigned client = 0; client < clients; ++client) {
        threads.emplace_back([&, client] {
            std::vector<double> latencies;
            try {
                test::WorkerClient worker(socket_path);
                for (std::size_t n = 0; Clock::now() < stop; ++n) {
                    const auto sent = Clock::now();
                    const auto replies =
                        worker.request(test::register_request(client_registration(client, n)));
                    latencies.push_back(
                        std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
                    if (!replies.back().ok()) {
                        throw Error(ErrorKind::unavailable,
                                    "REGISTER failed: " + replies.back().line);
                    }
                    ++done;
                }
            } catch (const std::exception &error) {
                std::lock_guard lock(mutex);
                failure = error.what();
            }
            std::lock_guard lock(mutex);
            result.latencies_ms.insert(result.latencies_ms.end(), latencies.begin(),
                                       latencies.end());
        });
    }
    for (auto &thread : threads) {
        thread.join();
    }
    if (!failure.empty()) {
        throw Error(ErrorKind::unavailable, "REGISTER failed: " + failure);
    }
    result.per_second =
        static_cast<double>(done) / std::chrono::duration<double>(Clock::now() - start).count();
    return result;
}

// The worker's REGISTER path with group commit, without Dovecot: a unix
// socket server on PollEventLoop that answers the handshake and REGISTER,
// storing through GroupCommit and replying OK from its `done`.
class GroupCommitModel {
public:
    explicit GroupCommitModel(const std::string &directory) : socket_path_(directory + "/xaps") {
        auto options = LmdbStoreOptions::from(default_xaps_settings());
        options.path = directory + "/db";
        store_ = open_lmdb_store(options);
        commit_ = std::make_unique<GroupCommit>(loop_, *store_, unix_seconds);
        listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, socket_path_.c_str(), sizeof(address.sun_path) - 1);
        if (::bind(listen_fd_, reinterpret_cast<sockaddr *>(&address), sizeof(address)) != 0 ||
            ::listen(listen_fd_, 64) != 0) {
            throw Error(ErrorKind::unavailable, "cannot listen on " + socket_path_);
        }
        listen_watch_ = loop_.watch_fd(listen_fd_, EventLoop::IoDirection::read, [this] {
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                accept(fd);
            }
        });
        thread_ = std::thread([this] {
            while (!stop_) {
                loop_.run_once(std::chrono::milliseconds(20));
            }
        });
    }

    ~GroupCommitModel() {
        stop_ = true;
        thread_.join();
        connections_.clear();
        listen_watch_.reset();
        ::close(listen_fd_);
    }

    const std::string &socket_path() const { return socket_path_; }
    GroupCommit::Counters counters() const { return commit_->counters(); }

private:
    struct Connection {
        int fd = -1;
        std::string input;
        std::unique_ptr<EventLoop::Watch> watch;
        ~Connection() {
            watch.reset();
            ::close(fd);
        }
    };

    void accept(int fd) {
        const int id = fd;
        auto connection = std::make_unique<Connection>();
        connection->fd = fd;
        connection->watch =
            loop_.watch_fd(fd, EventLoop::IoDirection::read, [this, id] { on_readable(id); });
        connections_[id] = std::move(connection);
        send(fd, "VERSION\txaps\t1\t0\n");
    }

    static void send(int fd, const std::string &line) {
        // Replies are short and the clients read them: a blocking loop is fine.
        for (std::size_t sent = 0; sent < line.size();) {
            const ssize_t n = ::send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
            if (n <= 0 && errno != EAGAIN && errno != EINTR) {
                return;
            }
            sent += n > 0 ? static_cast<std::size_t>(n) : 0;
        }
    }

    void on_readable(int id) {
        Connection &connection = *connections_.at(id);
        char buffer[8192];
        const ssize_t got = ::recv(connection.fd, buffer, sizeof(buffer), 0);
        if (got <= 0) {
            if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                connections_.erase(id);
            }
            return;
        }
        connection.input.append(buffer, static_cast<std::size_t>(got));
        std::size_t start = 0;
        for (std::size_t end; (end = connection.input.find('\n', start)) != std::string::npos;
             start = end + 1) {
            handle_line(id, connection.input.substr(start, end - start));
        }
        connection.input.erase(0, start);
    }

    void handle_line(int id, const std::string &line) {
        const std::vector<std::string> fields = split_line(line);
        if (!fields.empty() && fields[0] == "VERSION") {
            return;
        }
        const int fd = connections_.at(id)->fd;
        try {
            protocol::RequestLine request = protocol::decode_request(fields);
            const auto *reg = std::get_if<protocol::Register>(&request.request);
            if (reg == nullptr) {
                throw Error(ErrorKind::invalid_input, "only REGISTER here");
            }
            // What RequestHandler::handle_register would do with GroupCommit.
            commit_->put(reg->registration, [this, id, request_id = request.id](
                                                const std::optional<Error> &error) {
                if (connections_.find(id) == connections_.end()) {
                    return; // the client left meanwhile
                }
                send(connections_.at(id)->fd,
                     protocol::encode_reply(error ? protocol::Reply::fail(request_id, *error)
                                                  : protocol::Reply::ok(request_id, {"topic"})));
            });
        } catch (const Error &error) {
            send(fd, protocol::encode_reply(
                         protocol::Reply::fail(protocol::request_id_of(fields), error)));
        }
    }

    std::string socket_path_;
    PollEventLoop loop_;
    std::unique_ptr<RegistrationStore> store_;
    std::unique_ptr<GroupCommit> commit_;
    int listen_fd_ = -1;
    std::unique_ptr<EventLoop::Watch> listen_watch_;
    std::map<int, std::unique_ptr<Connection>> connections_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// How long one durable commit of one registration takes on this disk.
std::vector<double> single_put_latencies(const std::string &directory, std::size_t count) {
    auto options = LmdbStoreOptions::from(default_xaps_settings());
    options.path = directory + "/single";
    auto store = open_lmdb_store(options);
    std::vector<double> latencies;
    for (std::size_t n = 0; n < count; ++n) {
        const auto start = Clock::now();
        store->put(client_registration(99, n), unix_seconds());
        latencies.push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
    return latencies;
}

void report_run(const std::string &what, const RunResult &run, bool judged) {
    const double p99 = percentile(run.latencies_ms, 0.99);
    report("4 registrations", what + ": REGISTER rate, 16 clients", run.per_second, "regs/s",
           judged ? ">= 2000/s" : "", judged ? at_least(run.per_second, 2000) : Verdict::info);
    report("4 registrations", what + ": REGISTER p99, 16 clients", p99, "ms",
           judged ? "< 10 ms" : "", judged ? at_most(p99, 10) : Verdict::info);
}

} // namespace

int main(int argc, char **argv) {
    require_root("bench-register");
    const Options options = parse_options(argc, argv);
    try {
        MockApnsServer mock(mock_config());
        mock.start();
        test::DovecotInstance dovecot(dovecot_options(mock.port(), false));
        dovecot.start();
        register_for(dovecot.worker_socket_path(), std::chrono::milliseconds(300)); // warm up
        progress("figure 4: 16 clients REGISTER for " + std::to_string(options.duration.count()) +
                 " ms (the worker as built)");
        const RunResult worker = register_for(dovecot.worker_socket_path(), options.duration);
        progress("  worker: " + fixed(worker.per_second, 0) + " regs/s, " +
                 describe_distribution(worker.latencies_ms, "ms") + " (load " +
                 fixed(load_average(), 1) + ")");
        dovecot.stop();
        if (auto problems = dovecot.log_problems(); !problems.empty()) {
            throw Error(ErrorKind::internal, "Dovecot logged: " + problems.front());
        }

        test::TemporaryDirectory scratch("xaps-bench-");
        const auto single = single_put_latencies(scratch.path(), 50);
        progress("  one put() (a durable LMDB commit) on this disk: " +
                 describe_distribution(single, "ms"));

        progress("figure 4: the same against the group commit model");
        RunResult grouped;
        GroupCommit::Counters counters;
        {
            GroupCommitModel model(scratch.path());
            register_for(model.socket_path(), std::chrono::milliseconds(300));
            grouped = register_for(model.socket_path(), options.duration);
            counters = model.counters();
        }
        progress("  group commit: " + fixed(grouped.per_second, 0) + " regs/s, " +
                 describe_distribution(grouped.latencies_ms, "ms") + ", " +
                 fixed(static_cast<double>(counters.registrations) /
                           static_cast<double>(std::max<std::uint64_t>(counters.commits, 1)),
                       1) +
                 " registrations per commit on average, at most " +
                 std::to_string(counters.largest_batch));

        report_run("worker as built", worker, true);
        report("4 registrations", "one durable put() on this disk, p50", percentile(single, 0.5),
               "ms");
        report_run("group commit model", grouped, false);
    } catch (const std::exception &error) {
        std::fprintf(stderr, "bench-register failed: %s\n", error.what());
        report_failure("4 registrations", "run", error.what());
        return 1;
    }
    return 0;
}
