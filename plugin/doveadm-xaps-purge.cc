// doveadm xaps purge -u USER | -t TOKEN | -A: removes registrations and
// prints how many were removed (field `removed`). Exactly one selector;
// removing nothing is not an error, so purging is idempotent.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"

namespace xaps::doveadm {

namespace {

protocol::Purge purge_request(struct doveadm_cmd_context *cctx) {
    const char *user = nullptr;
    const char *token = nullptr;
    bool all = false;
    bool has_user = doveadm_cmd_param_str(cctx, "user", &user);
    bool has_token = doveadm_cmd_param_str(cctx, "token", &token);
    (void)doveadm_cmd_param_bool(cctx, "all", &all);
    if (int(has_user) + int(has_token) + int(all) != 1) {
        usage_error(cmd_xaps_purge, "give exactly one of -u, -t, -A");
    }
    if (has_user) {
        if (*user == '\0') {
            usage_error(cmd_xaps_purge, "-u needs a user name");
        }
        return {protocol::PurgeScope::user, user};
    }
    if (has_token) {
        if (*token == '\0') {
            usage_error(cmd_xaps_purge, "-t needs a device token");
        }
        return {protocol::PurgeScope::token, token};
    }
    return {protocol::PurgeScope::all, {}};
}

void purge(struct doveadm_cmd_context *cctx) {
    protocol::Purge request = purge_request(cctx);
    WorkerSession session;
    std::uint64_t removed =
        number_field(ok_fields(session.call(request, request_timeout)), 0, "count of removed");

    doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
    doveadm_print_header("removed", "removed", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_num(removed);
}

void cmd_purge(struct doveadm_cmd_context *cctx) noexcept {
    run_command("purge", [cctx] { purge(cctx); });
}

const struct doveadm_cmd_param purge_params[] = {
    param('u', "user", CMD_PARAM_STR),
    param('t', "token", CMD_PARAM_STR),
    param('A', "all", CMD_PARAM_BOOL),
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_purge =
    command("xaps purge", cmd_purge, "-u <user> | -t <device token> | -A", purge_params);

} // namespace xaps::doveadm
