// doveadm xaps import FILE: moves the registrations of xapsd, the Go daemon,
// from its database.json into the worker's store (IMPORT requests, which
// keep xapsd's registration times). Idempotent: entries the store already
// holds are counted as present and left alone. Entries older than
// xaps_registration_ttl are skipped as expired: the worker would drop them.
//
// Prints the counts (fields imported, present, skipped); each skipped entry
// is a warning on stderr with its reason. Exit code: EX_DATAERR when the file
// is no xapsd database or entries were skipped, EX_NOINPUT when it cannot be
// read, EX_TEMPFAIL when the worker is unreachable.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"
#include "xapsd-import.h"

#include <ctime>
#include <optional>
#include <sysexits.h>

namespace xaps::doveadm {

namespace {

// IMPORT requests in flight at once: enough to hide the round trips, few
// enough to stay far below the client's output buffer.
constexpr std::size_t import_window = 32;

// xapsd kept mailbox names as the IMAP client sent them: modified UTF-7.
std::optional<std::string> decode_mailbox_name(const std::string &name) {
    if (name.find('&') == std::string::npos) {
        return name;
    }
    std::optional<std::string> utf8;
    T_BEGIN {
        string_t *decoded = t_str_new(name.size() * 2);
        if (imap_utf7_to_utf8(name.c_str(), decoded) == 0) {
            utf8.emplace(str_c(decoded), str_len(decoded));
        }
    }
    T_END;
    return utf8;
}

// Reports why the file cannot be imported, if it cannot.
std::optional<plugin::XapsdDatabase> read_file(const char *path) {
    plugin::XapsdImportOptions options;
    options.now = static_cast<std::int64_t>(std::time(nullptr));
    // What the worker would expire at once is not worth importing.
    options.expired_before = options.now - read_settings().registration_ttl.count();
    options.decode_mailbox_name = decode_mailbox_name;
    try {
        return plugin::read_xapsd_database(path, options);
    } catch (const Error &e) {
        report_error(e.kind() == ErrorKind::not_found ? EX_NOINPUT : EX_DATAERR,
                     std::string("xaps import: ") + e.what());
        return std::nullopt;
    }
}

struct ImportCounts {
    std::uint64_t imported = 0;
    std::uint64_t present = 0;
    std::uint64_t skipped = 0;
};

void warn_skipped(const std::string &user, const std::string &account_id,
                  const std::string &reason) {
    std::string entry =
        account_id.empty() ? "user '" + user + "'" : "'" + user + "' account '" + account_id + "'";
    i_warning("xaps import: skipped %s: %s", entry.c_str(), reason.c_str());
}

void import(struct doveadm_cmd_context *cctx) {
    const char *path = nullptr;
    if (!doveadm_cmd_param_str(cctx, "file", &path) || *path == '\0') {
        usage_error(cmd_xaps_import, "the file is missing");
    }
    std::optional<plugin::XapsdDatabase> file = read_file(path);
    if (!file) {
        return;
    }
    const plugin::XapsdDatabase &database = *file;

    ImportCounts counts;
    counts.skipped = database.skipped.size();

    WorkerSession session;
    std::optional<Error> fatal;
    std::size_t next = 0;
    // Keeps import_window requests in flight; stops sending at the first
    // failure that is not about one entry (worker gone, store broken).
    std::function<void()> send_more = [&] {
        while (!fatal && next < database.registrations.size() &&
               session.outstanding() < import_window) {
            const Registration &reg = database.registrations[next++];
            session.send(protocol::Import{reg}, request_timeout,
                         [&reg, &counts, &fatal, &send_more](const protocol::Reply &reply) {
                             if (reply.status != protocol::ReplyStatus::fail) {
                                 bool exists = !reply.fields.empty() && reply.fields[0] == "exists";
                                 (exists ? counts.present : counts.imported)++;
                             } else if (Error error = reply.error();
                                        error.kind() == ErrorKind::invalid_input) {
                                 warn_skipped(reg.user, reg.account_id, error.what());
                                 counts.skipped++;
                             } else if (!fatal) {
                                 fatal = error;
                             }
                             try {
                                 send_more();
                             } catch (const Error &e) {
                                 if (!fatal) {
                                     fatal = e;
                                 }
                             }
                         });
        }
    };
    send_more();
    session.wait();
    // After the import: when the worker is unreachable they would only
    // hide the error.
    for (const auto &skipped : database.skipped) {
        warn_skipped(skipped.user, skipped.account_id, skipped.reason);
    }
    if (fatal) {
        throw Error(fatal->kind(), std::string(fatal->what()) + " (imported " +
                                       std::to_string(counts.imported) + " before)");
    }

    doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
    doveadm_print_header("imported", "imported", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_header("present", "present", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_header("skipped", "skipped", DOVEADM_PRINT_HEADER_FLAG_NUMBER);
    doveadm_print_num(counts.imported);
    doveadm_print_num(counts.present);
    doveadm_print_num(counts.skipped);
    if (counts.skipped > 0) {
        report_error(EX_DATAERR, std::string("xaps import: ") + path +
                                     ": entries skipped: " + std::to_string(counts.skipped));
    }
}

void cmd_import(struct doveadm_cmd_context *cctx) noexcept {
    run_command("import", [cctx] { import(cctx); });
}

const struct doveadm_cmd_param import_params[] = {
    param('\0', "file", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL),
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_import =
    command("xaps import", cmd_import, "<xapsd database.json>", import_params);

} // namespace xaps::doveadm
