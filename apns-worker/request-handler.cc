#include "request-handler.h"

#include "registration-rules.h"
#include "xaps-error.h"

namespace xaps {

namespace {

using Problem = RuleBreach::Problem;

constexpr std::int64_t import_clock_slack_seconds = 300;

// The worker states the rule a value breaks rather than the rules module's
// reason: the plugin relays it behind "Registration refused: ", after its own
// parser has checked the same rules with the client's words.
void require(bool accepted, const std::string &message) {
    if (!accepted) {
        throw Error(ErrorKind::invalid_input, message);
    }
}

template <typename Value> bool accepted(const Checked<Value> &checked) {
    return std::holds_alternative<Value>(checked);
}

// A userdb field may hold control characters in the push user name, and the
// user cannot change it: refusing it would only stop their pushes. The rules
// test control characters last, so any other breach still means the value
// does not fit the store.
bool fits_store(const Checked<std::string> &checked) {
    const auto *breach = std::get_if<RuleBreach>(&checked);
    return breach == nullptr || breach->problem == Problem::control_character;
}

// The listener names are the shipped ones (xaps_socket_path and
// xaps_admin_socket_path at their defaults) since that is what admins see.
void require_served(const protocol::Request &request, protocol::PeerRole role) {
    if (protocol::role_serving(request) == role) {
        return;
    }
    const std::string command = protocol::command_name(request);
    throw Error(ErrorKind::forbidden,
                role == protocol::PeerRole::mail
                    ? command + " is an admin command: it is served on the admin socket "
                                "(xaps-admin, root only; doveadm xaps uses it), not on the "
                                "mail socket"
                    : command + " comes from mail processes: it is served on the mail socket "
                                "(xaps), not on the admin socket");
}

} // namespace

void validate_registration(const Registration &reg, const std::vector<std::string> &subtopics) {
    require(fits_store(check_user(reg.user)), "invalid user name");
    const auto account_id = check_account_id(reg.account_id);
    if (const auto *breach = std::get_if<RuleBreach>(&account_id)) {
        const bool length =
            breach->problem == Problem::missing || breach->problem == Problem::too_long;
        throw Error(ErrorKind::invalid_input,
                    length ? "aps-account-id must be 1 to " +
                                 std::to_string(limits::max_account_id_length) + " characters"
                           : "aps-account-id must be UTF-8 without control characters");
    }
    require(accepted(check_device_token(reg.device_token)),
            "aps-device-token must be an even number of hex digits, at most " +
                std::to_string(limits::max_device_token_length));
    require(accepted(check_subtopic(reg.subtopic, subtopics)), "aps-subtopic is not accepted here");
    require(accepted(check_aps_version(reg.aps_version)), "aps-version must be 1 or 2");
    require(!check_mailbox_count(reg.mailboxes.size()),
            "too many mailboxes (at most " + std::to_string(limits::max_mailboxes) + ")");
    for (const auto &mailbox : reg.mailboxes) {
        // No control character reaches the store: `doveadm xaps list` prints
        // these names to an admin's terminal.
        require(accepted(check_mailbox_name(mailbox)),
                "mailbox names must be 1 to " + std::to_string(limits::max_mailbox_name_length) +
                    " bytes of UTF-8 without control characters");
    }
}

RequestHandler::RequestHandler(RegistrationStore &store, StoreWrites &writes,
                               GroupCommit &group_commit, PushScheduler &scheduler,
                               const PushGate &gate, RequestHandlerSettings settings,
                               StatusRows status_rows, std::function<std::int64_t()> unix_now)
    : store_(store), writes_(writes), group_commit_(group_commit), scheduler_(scheduler),
      gate_(gate), settings_(std::move(settings)), status_rows_(std::move(status_rows)),
      unix_now_(std::move(unix_now)) {}

RequestHandler::RequestHandler(RegistrationStore &store, GroupCommit &group_commit,
                               PushScheduler &scheduler, const PushGate &gate,
                               RequestHandlerSettings settings, StatusRows status_rows,
                               std::function<std::int64_t()> unix_now)
    : store_(store), own_writes_(std::make_unique<LocalStoreWrites>(store)), writes_(*own_writes_),
      group_commit_(group_commit), scheduler_(scheduler), gate_(gate),
      settings_(std::move(settings)), status_rows_(std::move(status_rows)),
      unix_now_(std::move(unix_now)) {}

void RequestHandler::handle(const protocol::RequestLine &line, protocol::PeerRole role,
                            const Reply &reply, const ReplyFlow &flow) noexcept {
    try {
        require_served(line.request, role);
        std::visit(
            [&](const auto &request) {
                using T = std::decay_t<decltype(request)>;
                if constexpr (std::is_same_v<T, protocol::Register>) {
                    handle_register(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Notify>) {
                    scheduler_.notify(request.user, request.mailbox, request.events);
                    reply(protocol::Reply::ok(line.id));
                } else if constexpr (std::is_same_v<T, protocol::List>) {
                    continue_list(
                        std::make_shared<ListProgress>(ListProgress{line.id, request.user, {}}),
                        reply, flow);
                } else if constexpr (std::is_same_v<T, protocol::Purge>) {
                    handle_purge(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Status>) {
                    handle_status(line.id, reply);
                } else if constexpr (std::is_same_v<T, protocol::Test>) {
                    handle_test(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Import>) {
                    handle_import(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Hello>) {
                    if (hello_observer_) {
                        hello_observer_(request);
                    }
                    reply(protocol::Reply::ok(line.id));
                } else if constexpr (std::is_same_v<T, protocol::Migrate>) {
                    if (!migrate_handler_) {
                        throw Error(ErrorKind::config, "xaps_shared_store is not set: there is no "
                                                       "shared store to migrate to or from");
                    }
                    migrate_handler_(line.id, request, reply);
                }
            },
            line.request);
    } catch (const Error &e) {
        reply(protocol::Reply::fail(line.id, e));
    } catch (const std::exception &e) {
        reply(protocol::Reply::fail(line.id, ErrorKind::internal, e.what()));
    } catch (...) {
        reply(protocol::Reply::fail(line.id, ErrorKind::internal, "unknown error"));
    }
}

void RequestHandler::handle_register(std::uint64_t id, const protocol::Register &request,
                                     const Reply &reply) {
    require_push_available();
    Registration reg = request.registration;
    reg.device_token = lower_ascii(reg.device_token);
    if (reg.aps_version == 1) {
        reg.mailboxes = {"INBOX"};
    }
    validate_registration(reg, settings_.subtopics);
    group_commit_.put(
        std::move(reg), [id, reply, topic = gate_.topic()](const std::optional<Error> &error) {
            reply(error ? protocol::Reply::fail(id, *error) : protocol::Reply::ok(id, {topic}));
        });
}

void RequestHandler::require_push_available() const {
    if (!gate_.is_open()) {
        // Not the reason itself: this text may reach IMAP clients, the
        // reason names files; admins see it in STATUS and the log.
        throw Error(ErrorKind::unavailable, "no working APNs credential: push is not available");
    }
}

void RequestHandler::continue_list(const std::shared_ptr<ListProgress> &progress,
                                   const Reply &reply, const ReplyFlow &flow) {
    do {
        if (flow && !flow.has_room()) {
            flow.when_room([this, progress, reply, flow] {
                try {
                    continue_list(progress, reply, flow);
                } catch (const Error &e) {
                    reply(protocol::Reply::fail(progress->id, e));
                } catch (const std::exception &e) {
                    reply(protocol::Reply::fail(progress->id, ErrorKind::internal, e.what()));
                } catch (...) {
                    reply(
                        protocol::Reply::fail(progress->id, ErrorKind::internal, "unknown error"));
                }
            });
            return;
        }
        // `now` per page: a row that expires during a long listing may be
        // left out, as a later LIST would.
        RegistrationStore::Page page =
            store_.page_after(progress->user, progress->after, list_page_rows, unix_now_());
        for (const auto &reg : page.registrations) {
            reply(protocol::Reply::row(progress->id, protocol::registration_to_fields(reg)));
        }
        progress->count += page.registrations.size();
        progress->after = std::move(page.next_after);
    } while (!progress->after.empty());
    reply(protocol::Reply::ok(progress->id, {std::to_string(progress->count)}));
}

void RequestHandler::handle_purge(std::uint64_t id, const protocol::Purge &request,
                                  const Reply &reply) {
    PurgeScope scope = PurgeScope::all;
    std::string value;
    switch (request.scope) {
    case protocol::PurgeScope::user:
        scope = PurgeScope::user;
        value = request.value;
        break;
    case protocol::PurgeScope::token:
        scope = PurgeScope::token;
        value = lower_ascii(request.value);
        break;
    case protocol::PurgeScope::all:
        break;
    }
    writes_.purge(scope, std::move(value),
                  [id, reply](const std::optional<Error> &error, std::size_t removed) {
                      reply(error ? protocol::Reply::fail(id, *error)
                                  : protocol::Reply::ok(id, {std::to_string(removed)}));
                  });
}

void RequestHandler::handle_status(std::uint64_t id, const Reply &reply) {
    if (status_rows_) {
        for (auto &[key, value] : status_rows_()) {
            reply(protocol::Reply::row(id, {key, value}));
        }
    }
    reply(protocol::Reply::ok(id));
}

void RequestHandler::handle_test(std::uint64_t id, const protocol::Test &request,
                                 const Reply &reply) {
    require_push_available();
    // Apple out of reach: say why now, not after the pushes' retries ran out
    // (the admin's doveadm would have given up waiting by then).
    if (std::string reason = gate_.unavailable_reason(); !reason.empty()) {
        throw Error(ErrorKind::unavailable, reason);
    }
    scheduler_.test(request.user, [id, reply](const auto &outcomes) {
        for (const auto &[reg, outcome] : outcomes) {
            reply(protocol::Reply::row(id, {reg.account_id, reg.device_token,
                                            std::to_string(outcome.http_status), outcome.reason}));
        }
        reply(protocol::Reply::ok(id, {std::to_string(outcomes.size())}));
    });
}

void RequestHandler::handle_import(std::uint64_t id, const protocol::Import &request,
                                   const Reply &reply) {
    Registration reg = request.registration;
    reg.device_token = lower_ascii(reg.device_token);
    validate_registration(reg, settings_.subtopics);
    // A last_seen in the future would never expire and would win the
    // per-user cap against the user's real phones for good. The slack is for
    // an export taken on a machine whose clock runs a little ahead.
    const std::int64_t latest = unix_now_() + import_clock_slack_seconds;
    require(reg.registered_at <= latest && reg.last_seen <= latest,
            "registered_at and last_seen must not be in the future");
    group_commit_.import(
        std::move(reg), [id, reply](const RegistrationStore::ImportResult &result) {
            reply(result.error ? protocol::Reply::fail(id, *result.error)
                               : protocol::Reply::ok(id, {result.added ? "imported" : "exists"}));
        });
}

} // namespace xaps
