#include "xaps-driver.h"

#include "dovecot-cxx.h"
#include "xaps-event.h"
#include "worker-protocol.h"
#include "xaps-error.h"
#include "xaps-plugin.h"
#include "xaps-user-settings.h"
#include "xaps-worker-client.h"

#include "daily-stamp.h"

#include <array>
#include <chrono>
#include <cstring>
#include <grp.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace xaps::plugin {

namespace {

// The events the worker acts on: the first two push at once, the others
// after a delay (docs/design.md, "Notifications").
constexpr std::array<const char *, 7> tracked_events = {
    "MessageNew",     "MessageAppend", "FlagsSet",      "FlagsClear",
    "MessageExpunge", "MailboxRename", "MailboxDelete",
};
using EventMask = unsigned;

EventMask event_bit(const char *name) {
    for (std::size_t i = 0; i < tracked_events.size(); i++) {
        if (std::strcmp(tracked_events[i], name) == 0) {
            return 1U << i;
        }
    }
    return 0;
}

// FlagsSet and FlagsClear record data for every flag or keyword update, also
// when nothing was set (or cleared): only a real change counts.
bool flags_changed(const struct push_notification_txn_event *event) {
    const char *name = event->event->event->name;
    if (event->data == nullptr) {
        return std::strcmp(name, "FlagsSet") != 0 && std::strcmp(name, "FlagsClear") != 0;
    }
    if (std::strcmp(name, "FlagsSet") == 0) {
        const auto *data =
            static_cast<const struct push_notification_event_flagsset_data *>(event->data);
        return data->flags_set != 0 || !array_is_empty(&data->keywords_set);
    }
    if (std::strcmp(name, "FlagsClear") == 0) {
        const auto *data =
            static_cast<const struct push_notification_event_flagsclear_data *>(event->data);
        return data->flags_clear != 0 || !array_is_empty(&data->keywords_clear);
    }
    return true;
}

// eventdata: the ARRAY of push_notification_txn_event pointers that messages
// and mailboxes each declare with a type of their own.
template <typename EventArray> EventMask events_of(EventArray *eventdata) {
    EventMask mask = 0;
    if (!array_is_created(eventdata)) {
        return mask;
    }
    struct push_notification_txn_event *const *event;
    array_foreach(eventdata, event) {
        if (flags_changed(*event)) {
            mask |= event_bit((*event)->event->event->name);
        }
    }
    return mask;
}

} // namespace

// Per mail user, from the user's pool. Trivial: Dovecot owns the memory.
struct xaps_driver_user {
    struct event *event;
    const char *socket_path;
    const char *push_user;
};

// One mailbox touched by a transaction.
struct xaps_txn_mailbox {
    struct xaps_txn_mailbox *next;
    const char *name; // UTF-8, as push_notification names it
    EventMask events;
};

// Per transaction, from the transaction's pool.
struct xaps_driver_txn {
    struct xaps_txn_mailbox *mailboxes;
};

namespace {

void remember(struct push_notification_driver_txn *dtxn, const char *mailbox, EventMask events) {
    if (events == 0 || mailbox == nullptr) {
        return;
    }
    auto *txn = static_cast<struct xaps_driver_txn *>(dtxn->context);
    for (auto *known = txn->mailboxes; known != nullptr; known = known->next) {
        if (std::strcmp(known->name, mailbox) == 0) {
            known->events |= events;
            return;
        }
    }
    pool_t pool = dtxn->ptxn->pool;
    auto *entry = p_new(pool, struct xaps_txn_mailbox, 1);
    entry->name = p_strdup(pool, mailbox);
    entry->events = events;
    entry->next = txn->mailboxes;
    txn->mailboxes = entry;
}

// Everything comes from the xaps_* settings: the driver has no config of its own.
int driver_init(struct mail_user *user, pool_t pool, void **context,
                const char **error_r) noexcept {
    try {
        UserSettings settings = read_user_settings(user);
        auto *duser = p_new(pool, struct xaps_driver_user, 1);
        duser->event = dovecot::create_event(user->event);
        duser->socket_path = p_strdup(pool, settings.socket_path.c_str());
        duser->push_user = p_strdup(pool, settings.push_user.c_str());
        if (settings.user_lookup_missing) {
            e_warning(duser->event, "userdb has no field %s (xaps_user_lookup): notifying as %s",
                      settings.xaps.user_lookup.c_str(), duser->push_user);
        }
        *context = duser;
        return 0;
    } catch (const std::exception &e) {
        *error_r = t_strdup(e.what());
    } catch (...) {
        *error_r = "initialization failed";
    }
    return -1;
}

// A mail process whose user may not open the mail socket (0660, group
// dovecot) loses every push, so the admin must hear of it; but the LDA is a
// new process for each mail, so once per process would be once per mail.
// Hence once per process and at most once a day per user (a stamp in the
// home, next to Dovecot's own .dovecot.lda-dupes).
void warn_worker_refused(struct mail_user *user, const struct xaps_driver_user *duser) {
    static bool warned_in_this_process = false;
    if (warned_in_this_process) {
        return;
    }
    warned_in_this_process = true;
    const char *home = nullptr;
    if (mail_user_get_home(user, &home) > 0 && home != nullptr &&
        !take_daily_turn(std::string(home) + "/.dovecot-xaps.refused",
                         std::chrono::system_clock::now())) {
        return;
    }
    std::string group = "its group";
    struct stat st {};
    if (::stat(duser->socket_path, &st) == 0) {
        if (const struct group *gr = ::getgrgid(st.st_gid); gr != nullptr) {
            group = std::string("group ") + gr->gr_name;
        }
    }
    e_warning(duser->event,
              "%s may not open the worker socket %s (permission denied for uid %ld): new-mail "
              "pushes from this %s process are off. Add that user to %s (e.g. adduser vmail "
              "dovecot), or deliver with LMTP, whose processes have it. "
              "Said at most once a day per user.",
              user->username, duser->socket_path, static_cast<long>(::geteuid()), user->service,
              group.c_str());
}

bool driver_begin_txn(struct push_notification_driver_txn *dtxn) noexcept {
    pool_t pool = dtxn->ptxn->pool;
    auto *duser = static_cast<struct xaps_driver_user *>(dtxn->duser->context);
    // MessageNew/MessageAppend record event data only when asked for some
    // message field; mail flags are the cheapest (from the index).
    auto *new_config = p_new(pool, struct push_notification_event_messagenew_config, 1);
    new_config->flags = PUSH_NOTIFICATION_MESSAGE_FLAGS;
    auto *append_config = p_new(pool, struct push_notification_event_messageappend_config, 1);
    append_config->flags = PUSH_NOTIFICATION_MESSAGE_FLAGS;
    for (const char *name : tracked_events) {
        void *event_config = nullptr;
        if (std::strcmp(name, "MessageNew") == 0) {
            event_config = new_config;
        } else if (std::strcmp(name, "MessageAppend") == 0) {
            event_config = append_config;
        }
        dovecot::push_event_init(dtxn, name, event_config, duser->event);
    }
    dtxn->context = p_new(pool, struct xaps_driver_txn, 1);
    return TRUE;
}

void driver_process_mbox(struct push_notification_driver_txn *dtxn,
                         struct push_notification_txn_mbox *mbox) noexcept {
    remember(dtxn, mbox->mailbox, events_of(&mbox->eventdata));
}

void driver_process_msg(struct push_notification_driver_txn *dtxn,
                        struct push_notification_txn_msg *msg) noexcept {
    remember(dtxn, msg->mailbox, events_of(&msg->eventdata));
}

void driver_end_txn(struct push_notification_driver_txn *dtxn, bool success) noexcept {
    auto *txn = static_cast<struct xaps_driver_txn *>(dtxn->context);
    if (!success || txn == nullptr) {
        return;
    }
    auto *duser = static_cast<struct xaps_driver_user *>(dtxn->duser->context);
    try {
        WorkerClient &worker = worker_client(duser->socket_path);
        for (auto *mailbox = txn->mailboxes; mailbox != nullptr; mailbox = mailbox->next) {
            protocol::Notify notify{duser->push_user, mailbox->name, {}};
            for (std::size_t i = 0; i < tracked_events.size(); i++) {
                if ((mailbox->events & (1U << i)) != 0) {
                    notify.events.emplace_back(tracked_events[i]);
                }
            }
            if (worker.notify(notify)) {
                e_debug(duser->event, "notified %s for %s", mailbox->name, duser->push_user);
            } else if (worker.connect_refused()) {
                warn_worker_refused(dtxn->ptxn->muser, duser);
                break;
            } else {
                e_debug(duser->event, "notification for %s dropped: worker unavailable",
                        mailbox->name);
            }
        }
    } catch (const std::exception &e) {
        e_error(duser->event, "notification failed: %s", e.what());
    } catch (...) {
        e_error(duser->event, "notification failed");
    }
}

void driver_deinit(struct push_notification_driver_user *driver_user) noexcept {
    auto *duser = static_cast<struct xaps_driver_user *>(driver_user->context);
    if (duser != nullptr && duser->event != nullptr) {
        event_unref(&duser->event);
    }
}

// push_notification calls cleanup() after every user's deinit in 2.3: the
// worker connection stays open for the next user and closes in the plugin's
// deinit.
void driver_cleanup() noexcept {}

const struct push_notification_driver xaps_driver = {
    .name = "xaps",
    .v =
        {
            .init = dovecot::push_driver_init<driver_init>,
            .begin_txn = driver_begin_txn,
            .process_mbox = driver_process_mbox,
            .process_msg = driver_process_msg,
            .end_txn = driver_end_txn,
            .deinit = driver_deinit,
            .cleanup = driver_cleanup,
        },
};

// The plugin is loaded (mail_plugins) but push_notification was not told to
// run it: every push for new mail is silently lost. Once per process is
// enough: it is the configuration, not the user.
void check_driver_configured(struct mail_user *user) noexcept {
    static bool warned = false;
    if (warned || dovecot::push_driver_configured(user, "xaps")) {
        return;
    }
    warned = true;
    struct event *event = dovecot::create_event(user->event);
    e_warning(event, "the xaps plugin is loaded but no push_notification_driver setting names xaps "
                     "(another file may have set push_notification_driver after the package's "
                     "xaps-push-driver.conf.ext): mail changes are not pushed. "
                     "Run `dpkg-reconfigure dovecot-xaps` to add xaps in the first free slot.");
    event_unref(&event);
}

struct mail_storage_hooks driver_hooks = [] {
    struct mail_storage_hooks hooks {};
    hooks.mail_user_created = check_driver_configured;
    return hooks;
}();

} // namespace

void driver_register() noexcept {
    push_notification_driver_register(&xaps_driver);
    mail_storage_hooks_add(plugin_module(), &driver_hooks);
}

void driver_unregister() noexcept {
    mail_storage_hooks_remove(&driver_hooks);
    push_notification_driver_unregister(&xaps_driver);
}

} // namespace xaps::plugin
