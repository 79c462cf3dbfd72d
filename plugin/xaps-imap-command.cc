#include "xaps-imap-command.h"

#include "dovecot-cxx.h"
#include "xaps-event.h"
#include "worker-protocol.h"
#include "xaps-error.h"
#include "xaps-plugin.h"
#include "xaps-request.h"
#include "xaps-user-settings.h"
#include "xaps-worker-client.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

// The imap binary defines these; lmtp and lda do not. Weak references let the
// module load everywhere, and imap_available() checks them before any use.
#pragma weak command_register
#pragma weak command_unregister
#pragma weak imap_client_created_hook_set
#pragma weak client_add_capability
#pragma weak client_read_args
#pragma weak client_send_line
#pragma weak client_send_tagline
#pragma weak client_send_command_error

namespace xaps::plugin {

namespace {

constexpr const char *command_name = "XAPPLEPUSHSERVICE";
constexpr const char *capability = "XAPPLEPUSHSERVICE";
// The phone waits for the reply; a worker that takes longer is as good as down.
constexpr std::chrono::milliseconds register_timeout(5000);
// Lists nest no deeper than the mailbox list; deeper ones only feed
// ignored pairs and are not worth converting.
constexpr unsigned max_list_depth = 2;
constexpr const char *unavailable_reply =
    "NO [UNAVAILABLE] Push registration is unavailable, try again later.";

imap_client_created_func_t *next_hook_client_created = nullptr;
bool command_registered = false;
bool missing_credential_logged = false;

bool imap_available() {
    return &command_register != nullptr && &command_unregister != nullptr &&
           &imap_client_created_hook_set != nullptr && &client_add_capability != nullptr &&
           &client_read_args != nullptr && &client_send_line != nullptr &&
           &client_send_tagline != nullptr && &client_send_command_error != nullptr;
}

struct StrFree {
    void operator()(string_t *str) const noexcept { str_free(&str); }
};

// Text from elsewhere made safe for the end of a tagged reply line: no
// control characters, bounded length.
std::string tagline_text(std::string text) {
    constexpr std::size_t max_length = 200;
    if (text.size() > max_length) {
        text.resize(max_length);
    }
    for (char &c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) {
            c = ' ';
        }
    }
    return text;
}

// value as an IMAP string: quoted, or a literal when quoting cannot carry it.
std::string imap_string(const char *value) {
    std::unique_ptr<string_t, StrFree> str(str_new(default_pool, 64));
    imap_append_string(str.get(), value);
    return std::string(str_c(str.get()), str_len(str.get()));
}

std::optional<std::string> mutf7_to_utf8(const std::string &name) {
    std::unique_ptr<string_t, StrFree> utf8(str_new(default_pool, name.size() + 16));
    if (imap_utf7_to_utf8(name.c_str(), utf8.get()) < 0) {
        return std::nullopt;
    }
    return std::string(str_c(utf8.get()), str_len(utf8.get()));
}

RequestArg to_request_arg(const struct imap_arg *arg, unsigned depth) {
    const struct imap_arg *items = nullptr;
    if (imap_arg_get_list(arg, &items)) {
        if (depth >= max_list_depth) {
            return RequestArg::nil();
        }
        std::vector<RequestArg> converted;
        for (; !IMAP_ARG_IS_EOL(items); items++) {
            converted.push_back(to_request_arg(items, depth + 1));
        }
        return RequestArg::list(std::move(converted));
    }
    const char *text = nullptr;
    if (imap_arg_get_astring(arg, &text)) {
        return RequestArg::string(std::string(text, arg->str_len));
    }
    return RequestArg::nil();
}

std::vector<RequestArg> to_request_args(const struct imap_arg *args) {
    std::vector<RequestArg> converted;
    for (; !IMAP_ARG_IS_EOL(args); args++) {
        converted.push_back(to_request_arg(args, 1));
    }
    return converted;
}

// Whether this user gets the capability and the command. Logs why not, once
// per process, when the plugin is enabled but no credential is configured.
bool enabled_for(struct mail_user *user, const UserSettings &settings, struct event *event) {
    if (!mail_user_is_plugin_loaded(user, plugin_module())) {
        return false;
    }
    if (settings.has_credential()) {
        return true;
    }
    // Debug only: every login is a new imap process, and the worker already
    // logs the one line that tells the admin what to configure.
    if (!missing_credential_logged) {
        missing_credential_logged = true;
        e_debug(event, "XAPPLEPUSHSERVICE is not offered: no APNs credential is configured. "
                      "Set xaps_apns_cert_file (with xaps_apns_key_file), xaps_apns_p12_file, "
                      "or xaps_apns_token_key_file (with xaps_apns_key_id, xaps_apns_team_id "
                      "and xaps_apns_topic) in plugin { }");
    }
    return false;
}

// The state of one XAPPLEPUSHSERVICE command while it waits for the worker.
// Allocated from the command's pool: trivial.
struct xaps_command_context {
    struct event *event;
    WorkerClient *worker;
    WorkerClient::RequestId request_id;
    unsigned aps_version;
    const char **mailboxes_as_sent; // NULL-terminated; echoed for version 2
    // Set when the worker answered: NULL topic means the registration failed,
    // `refusal` says why when the worker refused the values (not unavailable).
    bool answered;
    const char *topic;
    const char *refusal;
};

void context_free(struct xaps_command_context *ctx) {
    if (ctx->event != nullptr) {
        event_unref(&ctx->event);
    }
}

void send_reply(struct client_command_context *cmd, struct xaps_command_context *ctx) {
    if (ctx->refusal != nullptr) {
        client_send_tagline(cmd, t_strconcat("NO ", ctx->refusal, nullptr));
        return;
    }
    if (ctx->topic == nullptr) {
        client_send_tagline(cmd, unavailable_reply);
        return;
    }
    struct client *client = cmd->client;
    if (ctx->aps_version == 2) {
        for (const char **name = ctx->mailboxes_as_sent; *name != nullptr; name++) {
            std::string line = std::string("* XAPPLEPUSHSERVICE \"mailbox\" ") + imap_string(*name);
            client_send_line(client, line.c_str());
        }
    }
    std::string line = "* XAPPLEPUSHSERVICE \"aps-version\" \"" + std::to_string(ctx->aps_version) +
                       "\" \"aps-topic\" " + imap_string(ctx->topic);
    client_send_line(client, line.c_str());
    client_send_tagline(cmd, "OK XAPPLEPUSHSERVICE completed.");
}

// cmd->func while waiting. Dovecot calls it with cmd->cancel set when the
// client goes away, and (state WAIT_OUTPUT) once the worker has answered and
// the client's output is free.
bool cmd_xapplepushservice_continue(struct client_command_context *cmd) noexcept {
    auto *ctx = static_cast<struct xaps_command_context *>(cmd->context);
    if (cmd->cancel) {
        if (!ctx->answered) {
            ctx->worker->cancel(ctx->request_id);
        }
        context_free(ctx);
        return TRUE;
    }
    if (!ctx->answered) {
        return FALSE;
    }
    try {
        send_reply(cmd, ctx);
    } catch (...) {
        client_send_tagline(cmd, unavailable_reply);
    }
    context_free(ctx);
    return TRUE;
}

// The worker's answer, from the worker connection's ioloop callback. The
// reply is not written from here: another command may own the client's
// output (a FETCH literal in flight). Hand it to Dovecot's output loop.
void worker_answered(struct client_command_context *cmd, const protocol::Reply &reply) {
    auto *ctx = static_cast<struct xaps_command_context *>(cmd->context);
    ctx->answered = true;
    if (reply.status == protocol::ReplyStatus::ok && !reply.fields.empty()) {
        ctx->topic = p_strdup(cmd->pool, reply.fields[0].c_str());
        e_debug(ctx->event, "registered, aps-topic %s", ctx->topic);
    } else if (reply.status == protocol::ReplyStatus::ok) {
        e_error(ctx->event, "registration failed: the worker's OK carries no aps-topic");
    } else if (Error error = reply.error(); error.kind() == ErrorKind::invalid_input) {
        // The worker checks every registration again, with its own (global)
        // settings: a refusal there is final, and the phone must not be told
        // to try again later.
        e_debug(ctx->event, "refused by the worker: %s", error.what());
        ctx->refusal = p_strdup(
            cmd->pool, tagline_text("Registration refused: " + std::string(error.what())).c_str());
    } else {
        e_error(ctx->event, "registration failed: %s", reply.error().what());
    }
    cmd->state = CLIENT_COMMAND_STATE_WAIT_OUTPUT;
    o_stream_set_flush_pending(cmd->client->output, TRUE);
}

// Returns TRUE when the command is finished, FALSE when it waits for the worker.
bool start_registration(struct client_command_context *cmd, const struct imap_arg *args) {
    struct client *client = cmd->client;
    struct mail_user *user = client->user;
    dovecot::EventHandle event(dovecot::create_event(cmd->event));

    UserSettings settings;
    try {
        settings = read_user_settings(user);
    } catch (const Error &e) {
        e_error(event.get(), "%s", e.what());
        client_send_tagline(cmd, unavailable_reply);
        return TRUE;
    }
    if (!enabled_for(user, settings, event.get())) {
        client_send_command_error(cmd, "Unknown command.");
        return TRUE;
    }

    std::vector<RequestArg> request_args = to_request_args(args);
    RequestPolicy policy{settings.xaps.subtopics, mutf7_to_utf8};
    ParsedRequest parsed = parse_aps_request(request_args, policy);
    if (const auto *error = std::get_if<RequestError>(&parsed)) {
        e_debug(event.get(), "refused: %s", error->message.c_str());
        if (error->rejection == Rejection::bad) {
            client_send_command_error(cmd, error->message.c_str());
        } else {
            client_send_tagline(cmd, ("NO " + error->message).c_str());
        }
        return TRUE;
    }
    const ApsRequest &request = std::get<ApsRequest>(parsed);

    if (settings.user_lookup_missing) {
        e_warning(event.get(), "userdb has no field %s (xaps_user_lookup): registering as %s",
                  settings.xaps.user_lookup.c_str(), settings.push_user.c_str());
    }
    protocol::Register reg;
    reg.registration.user = settings.push_user; // never a value the client sent
    reg.registration.account_id = request.account_id;
    reg.registration.device_token = request.device_token;
    reg.registration.subtopic = request.subtopic;
    reg.registration.aps_version = request.aps_version;
    for (const RequestMailbox &mailbox : request.mailboxes) {
        // Registered as echoed: the phone knows a pushed mailbox by the MD5 of
        // the echoed name, decoded, and INBOX is echoed in the client's case.
        reg.registration.mailboxes.push_back(
            mailbox.utf8 == "INBOX" ? mutf7_to_utf8(mailbox.as_sent).value_or(mailbox.utf8)
                                    : mailbox.utf8);
    }

    auto *ctx = p_new(cmd->pool, struct xaps_command_context, 1);
    ctx->aps_version = request.aps_version;
    ctx->mailboxes_as_sent = p_new(cmd->pool, const char *, request.mailboxes.size() + 1);
    for (std::size_t i = 0; i < request.mailboxes.size(); i++) {
        ctx->mailboxes_as_sent[i] = p_strdup(cmd->pool, request.mailboxes[i].as_sent.c_str());
    }
    ctx->worker = &worker_client(settings.socket_path);
    try {
        ctx->request_id =
            ctx->worker->send(reg, register_timeout,
                              [cmd](const protocol::Reply &reply) { worker_answered(cmd, reply); });
    } catch (const Error &e) {
        e_error(event.get(), "registration failed: %s", e.what());
        client_send_tagline(cmd, unavailable_reply);
        return TRUE;
    }
    e_debug(event.get(), "registering device %s (aps-version %u, %zu mailboxes) as %s",
            request.device_token.c_str(), request.aps_version, request.mailboxes.size(),
            settings.push_user.c_str());
    ctx->event = event.release();
    cmd->context = ctx;
    cmd->func = cmd_xapplepushservice_continue;
    cmd->state = CLIENT_COMMAND_STATE_WAIT_EXTERNAL;
    return FALSE;
}

bool cmd_xapplepushservice(struct client_command_context *cmd) noexcept {
    const struct imap_arg *args = nullptr;
    // FALSE: more input is needed (a literal), or a syntax error was answered.
    if (!client_read_args(cmd, 0, 0, &args)) {
        return FALSE;
    }
    try {
        return start_registration(cmd, args);
    } catch (const std::exception &e) {
        e_error(cmd->event, "xaps: XAPPLEPUSHSERVICE failed: %s", e.what());
    } catch (...) {
        e_error(cmd->event, "xaps: XAPPLEPUSHSERVICE failed");
    }
    client_send_tagline(cmd, unavailable_reply);
    return TRUE;
}

void client_created(struct client **client) noexcept {
    try {
        struct mail_user *user = (*client)->user;
        dovecot::EventHandle event(dovecot::create_event(user->event));
        try {
            if (enabled_for(user, read_user_settings(user), event.get())) {
                client_add_capability(*client, capability);
            }
        } catch (const Error &e) {
            e_error(event.get(), "XAPPLEPUSHSERVICE is not offered: %s", e.what());
        }
    } catch (...) {
    }
    if (next_hook_client_created != nullptr) {
        next_hook_client_created(client);
    }
}

} // namespace

void imap_command_init() noexcept {
    if (!imap_available() || command_registered) {
        return;
    }
    command_register(command_name, cmd_xapplepushservice, static_cast<enum command_flags>(0));
    next_hook_client_created = imap_client_created_hook_set(client_created);
    command_registered = true;
}

void imap_command_deinit() noexcept {
    if (!command_registered) {
        return;
    }
    imap_client_created_hook_set(next_hook_client_created);
    command_unregister(command_name);
    command_registered = false;
}

} // namespace xaps::plugin
