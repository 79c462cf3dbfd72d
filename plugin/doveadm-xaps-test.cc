// doveadm xaps test -u USER: pushes to every device of the user now and shows
// Apple's answer per device (account_id, device_token, status, reason;
// status is the HTTP status, 0 when Apple never answered).
//
// Exit code: 0 when every device got 200, EX_NOUSER when the user has no
// device, DOVEADM_EX_NOTPOSSIBLE (EX_DATAERR) when some push failed,
// EX_TEMPFAIL with the worker's reason when it cannot push at all (no working
// credential, or no working connection to Apple): the worker says so at once
// rather than letting the pushes wait out their retries.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"

#include <sysexits.h>

namespace xaps::doveadm {

namespace {

struct DeviceAnswer {
    std::string account_id;
    std::string device_token;
    std::uint64_t http_status = 0;
    std::string reason;
};

void test(struct doveadm_cmd_context *cctx) {
    const char *user = nullptr;
    if (!doveadm_cmd_param_str(cctx, "user", &user) || *user == '\0') {
        usage_error(cmd_xaps_test, "-u is required");
    }

    std::vector<DeviceAnswer> answers;
    WorkerSession session;
    ok_fields(
        session.call(protocol::Test{user}, test_timeout, [&answers](const protocol::Reply &row) {
            if (row.fields.size() != 4) {
                throw Error(ErrorKind::internal, "a TEST row does not have 4 fields");
            }
            answers.push_back({row.fields[0], row.fields[1],
                               number_field(row.fields, 2, "HTTP status"), row.fields[3]});
        }));
    if (answers.empty()) {
        report_error(EX_NOUSER, std::string("xaps test: ") + user + " has no registered device");
        return;
    }

    doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
    doveadm_print_header_simple("account_id");
    doveadm_print_header_simple("device_token");
    doveadm_print_header("status", "status", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_header_simple("reason");
    std::size_t failed = 0;
    for (const auto &answer : answers) {
        doveadm_print(answer.account_id.c_str());
        doveadm_print(answer.device_token.c_str());
        doveadm_print_num(answer.http_status);
        doveadm_print(answer.reason.c_str());
        if (answer.http_status != 200) {
            failed++;
        }
    }
    if (failed > 0) {
        report_error(DOVEADM_EX_NOTPOSSIBLE, "xaps test: the push to " + std::to_string(failed) +
                                                 " of " + std::to_string(answers.size()) +
                                                 " devices failed");
    }
}

void cmd_test(struct doveadm_cmd_context *cctx) noexcept {
    run_command("test", [cctx] { test(cctx); });
}

const struct doveadm_cmd_param test_params[] = {
    param('u', "user", CMD_PARAM_STR),
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_test = command("xaps test", cmd_test, "-u <user>", test_params);

} // namespace xaps::doveadm
