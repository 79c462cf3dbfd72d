// doveadm xaps migrate to-shared | to-local: has the worker copy every
// registration from the standalone LMDB store (xaps_db_path) into the shared
// store (xaps_shared_store), or back, and prints how many it copied (field
// `copied`) and how many the target had already (`existing`, left as they
// were). Only the worker can open both stores, so doveadm only asks and
// waits; running it again copies only what is missing.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"

#include <cstring>
#include <optional>

namespace xaps::doveadm {

namespace {

// The worker answers a row after each page of 1,000 registrations: this
// bounds its silence, not the whole copy.
constexpr std::chrono::milliseconds page_timeout{60'000};

protocol::Migrate migrate_request(struct doveadm_cmd_context *cctx) {
    const char *direction = nullptr;
    if (!doveadm_cmd_param_str(cctx, "direction", &direction) || *direction == '\0') {
        usage_error(cmd_xaps_migrate, "say which way: to-shared or to-local");
    }
    if (std::strcmp(direction, "to-shared") == 0) {
        return {protocol::MigrationDirection::to_shared};
    }
    if (std::strcmp(direction, "to-local") == 0) {
        return {protocol::MigrationDirection::to_local};
    }
    usage_error(cmd_xaps_migrate,
                std::string("unknown direction '") + direction + "': to-shared or to-local");
}

struct Counts {
    std::uint64_t copied = 0;
    std::uint64_t existing = 0;
};

Counts counts_of(const std::vector<std::string> &fields) {
    return {number_field(fields, 0, "count of copied"),
            number_field(fields, 1, "count of existing")};
}

// A worker older than this module does not know the command: the admin
// upgraded the package but the running worker is the old one.
Error explained(const Error &error) {
    if (error.kind() == ErrorKind::invalid_input &&
        std::strcmp(error.what(), "unknown command 'MIGRATE'") == 0) {
        return Error(ErrorKind::unavailable,
                     "the running xaps worker does not know MIGRATE (it started before the "
                     "upgrade): restart Dovecot, then try again");
    }
    return error;
}

void migrate(struct doveadm_cmd_context *cctx) {
    const protocol::Migrate request = migrate_request(cctx);
    WorkerSession session;
    Counts progress;
    const protocol::Reply reply =
        session.call(request, page_timeout,
                     [&progress](const protocol::Reply &row) { progress = counts_of(row.fields); });
    if (reply.status == protocol::ReplyStatus::fail) {
        const Error error = explained(reply.error());
        if (progress.copied + progress.existing == 0) {
            throw error;
        }
        throw Error(error.kind(), std::string(error.what()) + " (copied " +
                                      std::to_string(progress.copied) + ", " +
                                      std::to_string(progress.existing) +
                                      " existing before; run it again to go on)");
    }
    const Counts counts = counts_of(reply.fields);

    doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
    doveadm_print_header("copied", "copied", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_header("existing", "existing", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_num(counts.copied);
    doveadm_print_num(counts.existing);
}

void cmd_migrate(struct doveadm_cmd_context *cctx) noexcept {
    run_command("migrate", [cctx] { migrate(cctx); });
}

const struct doveadm_cmd_param migrate_params[] = {
    param('\0', "direction", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL),
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_migrate =
    command("xaps migrate", cmd_migrate, "to-shared | to-local", migrate_params);

} // namespace xaps::doveadm
