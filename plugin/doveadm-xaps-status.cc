// doveadm xaps status: the worker's figures (topic, and topic_warning when
// iOS Mail would ignore pushes on it; credential, APNs connection, counters,
// store size), one key/value row each, as the worker reports them.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"

#include <utility>

namespace xaps::doveadm {

namespace {

void status(struct doveadm_cmd_context *) {
    std::vector<std::pair<std::string, std::string>> rows;
    WorkerSession session;
    ok_fields(
        session.call(protocol::Status{}, request_timeout, [&rows](const protocol::Reply &row) {
            if (row.fields.size() != 2) {
                throw Error(ErrorKind::internal, "a STATUS row is not a key and a value");
            }
            rows.emplace_back(row.fields[0], row.fields[1]);
        }));

    doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
    doveadm_print_header_simple("key");
    doveadm_print_header_simple("value");
    for (const auto &[key, value] : rows) {
        doveadm_print(key.c_str());
        doveadm_print(value.c_str());
    }
}

void cmd_status(struct doveadm_cmd_context *cctx) noexcept {
    run_command("status", [cctx] { status(cctx); });
}

const struct doveadm_cmd_param status_params[] = {
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_status = command("xaps status", cmd_status, "", status_params);

} // namespace xaps::doveadm
