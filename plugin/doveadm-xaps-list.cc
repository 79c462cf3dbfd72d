// doveadm xaps list [-u USER]: the stored registrations, one row per device.
//
// Fields: user account_id device_token subtopic mailboxes aps_version
// registered last_seen. Times are ISO 8601 in UTC; mailboxes are an IMAP-style
// list of quoted UTF-8 names, ("INBOX" "Sent Messages"), since a name may hold
// a comma, a space or a quote. No field reaches the terminal with a control
// character in it (printable-text.h). A user without registrations is not an
// error: the list is empty.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"
#include "printable-text.h"

namespace xaps::doveadm {

namespace {

void print_registration(const Registration &reg) {
    doveadm_print(printable_text(reg.user).c_str());
    doveadm_print(printable_text(reg.account_id).c_str());
    doveadm_print(printable_text(reg.device_token).c_str());
    doveadm_print(printable_text(reg.subtopic).c_str());
    doveadm_print(printable_string_list(reg.mailboxes).c_str());
    doveadm_print_num(reg.aps_version);
    doveadm_print(time_field(reg.registered_at).c_str());
    doveadm_print(time_field(reg.last_seen).c_str());
}

void print_table_header() {
    doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
    doveadm_print_header_simple("user");
    doveadm_print_header_simple("account_id");
    doveadm_print_header_simple("device_token");
    doveadm_print_header_simple("subtopic");
    doveadm_print_header_simple("mailboxes");
    doveadm_print_header("aps_version", "aps_version", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_header_simple("registered");
    doveadm_print_header_simple("last_seen");
}

void list(struct doveadm_cmd_context *cctx) {
    const char *user = nullptr;
    // An empty name would ask the worker for every user.
    if (doveadm_cmd_param_str(cctx, "user", &user) && *user == '\0') {
        usage_error(cmd_xaps_list, "-u needs a user name");
    }

    // Each row is printed as it arrives: a store of a million registrations
    // is never held in memory. The table starts with the first row, or with
    // the answer when there is none, so a worker that cannot be reached
    // leaves no table behind; one that fails midway leaves the rows before
    // it, then the error and a failing exit code.
    bool table_started = false;
    WorkerSession session;
    protocol::Reply reply =
        session.call(protocol::List{user == nullptr ? "" : user}, request_timeout,
                     [&table_started](const protocol::Reply &row) {
                         Registration reg = protocol::registration_from_fields(row.fields);
                         if (!table_started) {
                             print_table_header();
                             table_started = true;
                         }
                         print_registration(reg);
                     });
    ok_fields(reply);
    if (!table_started) {
        print_table_header();
    }
}

void cmd_list(struct doveadm_cmd_context *cctx) noexcept {
    run_command("list", [cctx] { list(cctx); });
}

const struct doveadm_cmd_param list_params[] = {
    param('u', "user", CMD_PARAM_STR),
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_list = command("xaps list", cmd_list, "[-u <user>]", list_params);

} // namespace xaps::doveadm
