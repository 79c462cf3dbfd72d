#include "doveadm-xaps-worker.h"

#include "dovecot-cxx.h"
#include "utc-time.h"

#include <charconv>
#include <optional>
#include <string_view>
#include <sysexits.h>

namespace xaps::doveadm {

XapsSettings read_settings() {
    return read_xaps_settings(dovecot::doveadm_setting_lookup());
}

std::string admin_socket_path() {
    return resolve_socket_path(read_settings().admin_socket_path, doveadm_settings->base_dir);
}

WorkerSession::WorkerSession() {
    // The client's connection and timeouts attach to the ioloop current
    // when they are created: this one.
    ioloop_ = io_loop_create();
    try {
        client_ = std::make_unique<plugin::WorkerClient>(admin_socket_path());
    } catch (...) {
        io_loop_destroy(&ioloop_);
        throw;
    }
}

WorkerSession::~WorkerSession() {
    client_.reset();
    io_loop_destroy(&ioloop_);
}

namespace {

// Sends through the client, saying what could not be reached when it fails.
template <typename... Handlers>
void send_request(plugin::WorkerClient &client, const protocol::Request &request,
                  std::chrono::milliseconds timeout, Handlers &&...handlers) {
    try {
        client.send(request, timeout, std::forward<Handlers>(handlers)...);
    } catch (const Error &e) {
        throw Error(e.kind(), std::string("cannot reach the xaps worker: ") + e.what());
    }
}

} // namespace

void WorkerSession::send(const protocol::Request &request, std::chrono::milliseconds timeout,
                         plugin::ReplyHandler on_reply) {
    send_request(*client_, request, timeout,
                 [this, on_reply = std::move(on_reply)](const protocol::Reply &reply) {
                     outstanding_--;
                     // The handler may send more: stop only if it did not,
                     // also when it throws.
                     struct StopWhenIdle {
                         WorkerSession *session;
                         ~StopWhenIdle() {
                             if (session->outstanding_ == 0) {
                                 io_loop_stop(session->ioloop_);
                             }
                         }
                     } stop_when_idle{this};
                     on_reply(reply);
                 });
    outstanding_++;
}

void WorkerSession::wait() {
    while (outstanding_ > 0) {
        io_loop_run(ioloop_);
    }
}

protocol::Reply WorkerSession::call(const protocol::Request &request,
                                    std::chrono::milliseconds timeout,
                                    const plugin::RowHandler &on_row) {
    std::optional<protocol::Reply> final_reply;
    // The client would log and drop what a row handler throws; the first
    // bad row fails the whole call instead.
    std::optional<std::string> row_error;
    plugin::RowHandler checked_on_row;
    if (on_row) {
        checked_on_row = [&on_row, &row_error](const protocol::Reply &row) {
            if (row_error) {
                return;
            }
            try {
                on_row(row);
            } catch (const std::exception &e) {
                row_error = e.what();
            }
        };
    }
    send_request(
        *client_, request, timeout,
        [this, &final_reply](const protocol::Reply &reply) {
            final_reply = reply;
            io_loop_stop(ioloop_);
        },
        checked_on_row);
    io_loop_run(ioloop_);
    if (!final_reply) {
        throw Error(ErrorKind::internal, "the worker client stopped without a reply");
    }
    if (row_error && final_reply->status != protocol::ReplyStatus::fail) {
        throw Error(ErrorKind::internal, "the worker sent an invalid row: " + *row_error);
    }
    return *final_reply;
}

int exit_code(ErrorKind kind) {
    switch (kind) {
    case ErrorKind::invalid_input:
        return EX_USAGE;
    case ErrorKind::unavailable:
        return EX_TEMPFAIL;
    case ErrorKind::not_found:
        return EX_NOUSER;
    case ErrorKind::config:
        return EX_CONFIG;
    case ErrorKind::forbidden:
        return EX_NOPERM;
    case ErrorKind::internal:
        break;
    }
    return EX_SOFTWARE;
}

void report_error(int code, const std::string &message) {
    i_error("%s", message.c_str());
    doveadm_exit_code = code;
}

void report_error(const Error &error) {
    report_error(exit_code(error.kind()), error.what());
}

void run_command(const char *name, const std::function<void()> &body) noexcept {
    try {
        body();
    } catch (const Error &e) {
        report_error(exit_code(e.kind()), std::string("xaps ") + name + ": " + e.what());
    } catch (const std::exception &e) {
        report_error(EX_SOFTWARE, std::string("xaps ") + name + ": " + e.what());
    } catch (...) {
        report_error(EX_SOFTWARE, std::string("xaps ") + name + ": unexpected failure");
    }
}

const std::vector<std::string> &ok_fields(const protocol::Reply &reply) {
    if (reply.status == protocol::ReplyStatus::fail) {
        throw reply.error();
    }
    return reply.fields;
}

std::string time_field(std::int64_t unix_seconds) {
    return unix_seconds == 0 ? "-" : iso8601_utc(unix_seconds);
}

std::uint64_t number_field(const std::vector<std::string> &fields, std::size_t index,
                           const char *what) {
    std::uint64_t value = 0;
    if (index < fields.size()) {
        const std::string &text = fields[index];
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec == std::errc{} && end == text.data() + text.size() && !text.empty()) {
            return value;
        }
    }
    throw Error(ErrorKind::internal, std::string("the worker sent no valid ") + what);
}

} // namespace xaps::doveadm
