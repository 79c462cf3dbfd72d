// doveadm xaps provision [-f|--force] [--no-reload]: the push certificate of
// xaps_apple_id from the legacy self-service certificate service at
// xaps_caservice_url (Apple stopped serving its own in late 2024), written
// where the worker loads it: <xaps_db_path>/caservice/mail.pem and mail.key,
// root's only (mode 0600 in a 0700 directory), each replaced atomically.
// A stored certificate is kept while it is valid for more than 30 more days;
// --force renews it anyway. Meant to be run daily by a timer.
//
// The worker reads its credential when it starts, so after writing a new
// certificate the command makes Dovecot reload the way `doveadm reload` does
// (SIGHUP to the master named in <base_dir>/master.pid): the master then
// starts a fresh worker, which loads it. --no-reload leaves that to the admin.
//
// Prints fields action (issued, renewed, kept), certificate, key, not_after,
// renew_at and reloaded (yes/no). Exit codes: EX_CONFIG for settings, files
// and refusals only the admin can fix (wrong Apple ID or password, the
// service discontinued); EX_TEMPFAIL when the service could not be reached,
// or when a renewal failed and the stored certificate, still valid, is kept;
// EX_PROTOCOL for an answer that is not what the service should send.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"

#include "caservice-client.h"
#include "utc-time.h"
#include "xaps-event.h"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>

#include <sysexits.h>
#include <unistd.h>

namespace xaps::doveadm {

namespace {

std::string_view action_name(ProvisionedCertificate::Origin origin) {
    switch (origin) {
    case ProvisionedCertificate::Origin::issued:
        return "issued";
    case ProvisionedCertificate::Origin::renewed:
        return "renewed";
    case ProvisionedCertificate::Origin::reused:
    case ProvisionedCertificate::Origin::kept_after_failed_renewal:
        break;
    }
    return "kept";
}

// The running master's pid from <base_dir>/master.pid, as `doveadm reload`
// finds it; nullopt when Dovecot is not running.
std::optional<pid_t> running_master_pid() {
    const std::string path = std::string(doveadm_settings->base_dir) + "/master.pid";
    std::ifstream file(path);
    if (!file) {
        return std::nullopt;
    }
    std::string text((std::istreambuf_iterator<char>(file)), {});
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    pid_t pid = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
    if (ec != std::errc{} || end != text.data() + text.size() || pid <= 0) {
        throw Error(ErrorKind::unavailable, path + ": not a process id");
    }
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
        return std::nullopt; // left behind by a master that is gone
    }
    return pid;
}

// True when the master was told to reload.
bool reload_dovecot() {
    std::optional<pid_t> master = running_master_pid();
    if (!master) {
        i_warning("xaps provision: Dovecot is not running; the worker loads the new "
                  "certificate when it starts");
        return false;
    }
    if (::kill(*master, SIGHUP) != 0) {
        throw Error(ErrorKind::unavailable,
                    std::string("the certificate is written, but Dovecot could not be told to "
                                "reload (kill(") +
                        std::to_string(*master) + ", SIGHUP): " + std::strerror(errno) +
                        "): run `doveadm reload`");
    }
    return true;
}

void print_result(const ProvisionedCertificate &result, bool reloaded) {
    doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
    doveadm_print_header_simple("action");
    doveadm_print_header_simple("certificate");
    doveadm_print_header_simple("key");
    doveadm_print_header_simple("not_after");
    doveadm_print_header_simple("renew_at");
    doveadm_print_header_simple("reloaded");
    doveadm_print(std::string(action_name(result.origin)).c_str());
    doveadm_print(result.cert_file.c_str());
    doveadm_print(result.key_file.c_str());
    doveadm_print(iso8601_utc(result.not_after).c_str());
    doveadm_print(iso8601_utc(result.renew_at).c_str());
    doveadm_print(reloaded ? "yes" : "no");
}

void provision(struct doveadm_cmd_context *cctx) {
    if (cctx->conn_type != DOVEADM_CONNECTION_TYPE_CLI) {
        usage_error(cmd_xaps_provision,
                    "it writes files for the local worker and reloads the local Dovecot: run "
                    "it on the Dovecot host");
    }
    if (::geteuid() != 0) {
        throw Error(ErrorKind::config,
                    "must run as root: the worker reads the certificate and its key as root, "
                    "and nobody else may read the key");
    }
    bool force = false;
    bool no_reload = false;
    (void)doveadm_cmd_param_bool(cctx, "force", &force);
    (void)doveadm_cmd_param_bool(cctx, "no-reload", &no_reload);

    const XapsSettings settings = read_settings();
    CaServiceSettings caservice = caservice_settings_from(settings);
    caservice.renew_now = force;
    const dovecot::EventHandle event(dovecot::create_event(nullptr));
    ProvisionedCertificate result;
    try {
        result = provision_or_reuse(caservice, settings.db_path, std::chrono::system_clock::now(),
                                    [&event](LogLevel level, std::string_view message) {
                                        dovecot::log_to_event(event.get(), level, message);
                                    });
    } catch (const Error &e) {
        if (e.kind() == ErrorKind::invalid_input) {
            // Not the admin's input: the service's answer.
            report_error(EX_PROTOCOL, std::string("xaps provision: ") + e.what());
            return;
        }
        throw;
    }

    const bool written = result.origin == ProvisionedCertificate::Origin::issued ||
                         result.origin == ProvisionedCertificate::Origin::renewed;
    const bool reloaded = written && !no_reload && reload_dovecot();
    print_result(result, reloaded);
    if (result.origin == ProvisionedCertificate::Origin::kept_after_failed_renewal) {
        report_error(EX_TEMPFAIL, "xaps provision: renewing the certificate failed, the current "
                                  "one stays in use until " +
                                      iso8601_utc(result.not_after) + ": " +
                                      result.renewal_problem);
    }
}

void cmd_provision(struct doveadm_cmd_context *cctx) noexcept {
    run_command("provision", [cctx] { provision(cctx); });
}

const struct doveadm_cmd_param provision_params[] = {
    param('f', "force", CMD_PARAM_BOOL),
    param('\0', "no-reload", CMD_PARAM_BOOL),
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_provision =
    command("xaps provision", cmd_provision, "[-f|--force] [--no-reload]", provision_params);

} // namespace xaps::doveadm
