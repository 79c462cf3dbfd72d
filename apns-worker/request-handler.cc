#include "request-handler.h"

#include "text-checks.h"
#include "xaps-error.h"

#include <algorithm>

namespace xaps {

namespace {

bool is_hex(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    });
}

void require(bool condition, const std::string &message) {
    if (!condition) {
        throw Error(ErrorKind::invalid_input, message);
    }
}

std::string lower_ascii(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) {
        return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    });
    return text;
}

} // namespace

void validate_registration(const Registration &reg, const std::vector<std::string> &subtopics) {
    require(!reg.user.empty() && reg.user.size() <= limits::max_user_length, "invalid user name");
    require(!reg.account_id.empty() && reg.account_id.size() <= limits::max_account_id_length,
            "aps-account-id must be 1 to " + std::to_string(limits::max_account_id_length) +
                " characters");
    require(!has_control_character(reg.account_id) && is_valid_utf8(reg.account_id),
            "aps-account-id must be UTF-8 without control characters");
    require(!reg.device_token.empty() &&
                reg.device_token.size() <= limits::max_device_token_length &&
                reg.device_token.size() % 2 == 0 && is_hex(reg.device_token),
            "aps-device-token must be an even number of hex digits, at most " +
                std::to_string(limits::max_device_token_length));
    require(std::find(subtopics.begin(), subtopics.end(), reg.subtopic) != subtopics.end(),
            "aps-subtopic is not accepted here");
    require(reg.aps_version == 1 || reg.aps_version == 2, "aps-version must be 1 or 2");
    require(reg.mailboxes.size() <= limits::max_mailboxes,
            "too many mailboxes (at most " + std::to_string(limits::max_mailboxes) + ")");
    for (const auto &mailbox : reg.mailboxes) {
        require(!mailbox.empty() && mailbox.size() <= limits::max_mailbox_name_length,
                "invalid mailbox name length");
    }
}

RequestHandler::RequestHandler(RegistrationStore &store, GroupCommit &group_commit,
                               PushScheduler &scheduler, RequestHandlerSettings settings,
                               StatusRows status_rows, std::function<std::int64_t()> unix_now)
    : store_(store), group_commit_(group_commit), scheduler_(scheduler),
      settings_(std::move(settings)), status_rows_(std::move(status_rows)),
      unix_now_(std::move(unix_now)) {}

void RequestHandler::handle(const protocol::RequestLine &line, const Reply &reply) noexcept {
    try {
        std::visit(
            [&](const auto &request) {
                using T = std::decay_t<decltype(request)>;
                if constexpr (std::is_same_v<T, protocol::Register>) {
                    handle_register(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Notify>) {
                    scheduler_.notify(request.user, request.mailbox, request.events);
                    reply(protocol::Reply::ok(line.id));
                } else if constexpr (std::is_same_v<T, protocol::List>) {
                    handle_list(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Purge>) {
                    handle_purge(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Status>) {
                    handle_status(line.id, reply);
                } else if constexpr (std::is_same_v<T, protocol::Test>) {
                    handle_test(line.id, request, reply);
                } else if constexpr (std::is_same_v<T, protocol::Import>) {
                    handle_import(line.id, request, reply);
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
    if (settings_.topic.empty()) {
        throw Error(ErrorKind::unavailable, "no working APNs credential: push is not available");
    }
    Registration reg = request.registration;
    reg.device_token = lower_ascii(std::move(reg.device_token));
    if (reg.aps_version == 1) {
        reg.mailboxes = {"INBOX"};
    }
    validate_registration(reg, settings_.subtopics);
    group_commit_.put(
        std::move(reg), [id, reply, topic = settings_.topic](const std::optional<Error> &error) {
            reply(error ? protocol::Reply::fail(id, *error) : protocol::Reply::ok(id, {topic}));
        });
}

void RequestHandler::handle_list(std::uint64_t id, const protocol::List &request,
                                 const Reply &reply) {
    std::vector<Registration> registrations;
    if (request.user.empty()) {
        // all() does not filter by age as find_user() does: drop the expired
        // first, so both answers agree.
        store_.expire(unix_now_());
        registrations = store_.all();
    } else {
        registrations = store_.find_user(request.user, unix_now_());
    }
    for (const auto &reg : registrations) {
        reply(protocol::Reply::row(id, protocol::registration_to_fields(reg)));
    }
    reply(protocol::Reply::ok(id, {std::to_string(registrations.size())}));
}

void RequestHandler::handle_purge(std::uint64_t id, const protocol::Purge &request,
                                  const Reply &reply) {
    std::size_t removed = 0;
    switch (request.scope) {
    case protocol::PurgeScope::user:
        removed = store_.remove_user(request.value);
        break;
    case protocol::PurgeScope::token:
        removed = store_.remove_token(lower_ascii(request.value));
        break;
    case protocol::PurgeScope::all:
        removed = store_.remove_all();
        break;
    }
    reply(protocol::Reply::ok(id, {std::to_string(removed)}));
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
    if (settings_.topic.empty()) {
        throw Error(ErrorKind::unavailable, "no working APNs credential: push is not available");
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
    reg.device_token = lower_ascii(std::move(reg.device_token));
    validate_registration(reg, settings_.subtopics);
    bool added = store_.import(reg);
    reply(protocol::Reply::ok(id, {added ? "imported" : "exists"}));
}

} // namespace xaps
