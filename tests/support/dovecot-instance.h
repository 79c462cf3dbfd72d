// A real Dovecot (the installed /usr/sbin/dovecot) running from a private
// temporary directory with the package's configuration files as shipped
// (conf.d/, installed under the directory at the places the package installs
// them), after a stand-in for dovecot-core's own configuration (IMAP and LMTP
// on free loopback ports, test users) and before the few lines a test
// machine must change (test-machine-overrides.h): the worker and plugin built
// in this tree, the mock APNs and the test PKI as credentials. Needs root.
#pragma once

#include "dovecot-config.h"
#include "dovecot-process.h"
#include "line-connection.h"
#include "temporary-directory.h"
#include "test-machine-overrides.h"
#include "test-users.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace xaps::test {

// True in a run of scripts/sanitize.sh (XAPS_TEST_SANITIZER=1), which runs
// every process of Dovecot's with the address sanitizer's runtime.
bool sanitizer_run();

struct DovecotOptions {
    // The built mail plugin (lib<NN>_xaps_plugin.so), loaded where the shipped
    // files load it (imap, lmtp, lda; with notify and push_notification).
    // Empty or !enable_plugin: the shipped plugin lists are taken away.
    std::string plugin_path;
    bool enable_plugin = true;
    // The built xaps-worker, run as the shipped `service xaps`. Empty or
    // !enable_worker: the service is switched off, so the worker socket does
    // not exist.
    std::string worker_path;
    bool enable_worker = true;
    // The test PKI directory (ca.pem, client.pem, client.key). ca.pem becomes
    // xaps_apns_ca_file, the client certificate xaps_apns_cert_file/key_file,
    // all copied into the instance directory for the xaps user.
    std::string pki_dir;
    // xaps_apns_port (the mock APNs server's port); 0 leaves it unset.
    std::uint16_t apns_port = 0;
    // Written after the shipped files and the test machine's xaps settings,
    // in plugin { } (2.3) or as global settings (2.4): a value replaces the
    // machine's; an empty value removes the machine's, or empties a setting
    // the shipped files make (push_notification_driver on 2.3), as a later
    // file would.
    std::map<std::string, std::string> plugin_settings;
    // Users besides alice and bob; every user's password is DovecotInstance::password.
    std::vector<std::string> extra_users;
    // Every user is a system user of its own (xaps-test-<user>, created when
    // missing) whose mail processes run as its uid, like Debian's stock
    // passdb/userdb with system users. false: one virtual mail uid (vmail)
    // for every user.
    bool system_users = false;
    // Extra userdb fields such as "xaps_push_user=%Uu" (Dovecot's %variables
    // are expanded): appended to the static userdb's args, or the
    // passwd-file userdb's default_fields with system_users.
    std::string userdb_fields;
    // Appended to dovecot.conf as it is, after everything else.
    std::string extra_config;
    // A Sieve script (its text) that LMTP runs for every user: Pigeonhole's
    // sieve plugin in lmtp (Debian's dovecot-sieve). Empty: no Sieve.
    std::string sieve_script;
    Milliseconds start_timeout{15000};
};

class DovecotInstance {
public:
    static constexpr const char *password = "pass";

    // Prepares the directory and dovecot.conf; start() runs Dovecot.
    explicit DovecotInstance(DovecotOptions options);
    // Stops Dovecot and removes the directory (see TemporaryDirectory).
    ~DovecotInstance() = default;
    DovecotInstance(const DovecotInstance &) = delete;
    DovecotInstance &operator=(const DovecotInstance &) = delete;

    // Runs `dovecot -F -c <conf>` and returns once IMAP accepts connections
    // and, with a worker, the worker answered the protocol handshake on its
    // socket. Throws xaps::Error with Dovecot's output and log otherwise.
    void start();
    // SIGTERM, then waits for the master to exit (SIGKILL after 20 s).
    void stop() { process_.stop(); }
    bool running() const { return process_.running(); }
    // The Dovecot master's process id (-1 when not running): its children are
    // the instance's service processes.
    pid_t master_pid() const { return process_.master_pid(); }

    std::uint16_t imap_port() const { return imap_port_; }
    std::uint16_t lmtp_port() const { return lmtp_port_; }
    const std::string &dir() const { return dir_->path(); }
    std::string base_dir() const { return dir() + "/run"; }
    std::string conf_path() const { return dir() + "/dovecot.conf"; }
    const std::string &log_path() const { return process_.log_path(); }
    std::string lmtp_socket_path() const { return base_dir() + "/lmtp"; }
    // The worker's mail listener (REGISTER, NOTIFY; group dovecot, 0660),
    // whatever xaps_socket_path says.
    std::string worker_socket_path() const { return base_dir() + "/xaps"; }
    // The worker's admin listener (LIST, PURGE, STATUS, TEST, IMPORT; root
    // only, 0600).
    std::string admin_socket_path() const { return base_dir() + "/xaps-admin"; }
    // Where dovecot-lda run by a test logs: a file of its own that any uid
    // may append to, since the LDA runs as the mail user, not as root.
    std::string lda_log_path() const { return dir() + "/lda.log"; }
    std::string db_path() const { return dir() + "/xaps-db"; }
    const SystemUser &mail_user() const { return mail_user_; }
    const SystemUser &worker_user() const { return worker_user_; }
    // The system user the mail processes of `user` run as: its own account
    // with DovecotOptions::system_users, mail_user() otherwise.
    const SystemUser &account_of(const std::string &user) const;
    // alice, bob and the extra users. auth_username_format = %Ln, so an LMTP
    // recipient alice@example.com is the user alice.
    const std::vector<std::string> &users() const { return users_; }
    bool has_plugin() const;
    bool has_worker() const;

    // dovecot.conf: the machine, !include of the shipped 95-xaps.conf, the
    // machine's overrides, the test's Sieve script and extra_config.
    std::string config_text() const;
    // The whole log file (empty before Dovecot wrote it).
    std::string log() const { return process_.log(); }
    // Log lines with "Panic:" or "Fatal:", the ones no test may cause.
    std::vector<std::string> log_problems() const { return process_.log_problems(); }
    // Waits until the log contains `text`.
    bool wait_for_log(std::string_view text, Milliseconds timeout) const {
        return process_.wait_for_log(text, timeout);
    }
    // What Dovecot printed on stdout/stderr (configuration errors land here).
    std::string output() const { return process_.output(); }

private:
    void prepare_directory();
    void copy_credentials();
    TestMachine test_machine() const;
    TestMachineOverrides machine_overrides() const;
    // Empty without options_.sieve_script.
    std::string sieve_config(bool syntax_2_4) const;

    DovecotOptions options_;
    std::unique_ptr<TemporaryDirectory> dir_;
    SystemUser mail_user_;
    SystemUser worker_user_;
    std::vector<std::string> users_;
    // Empty unless DovecotOptions::system_users.
    std::map<std::string, SystemUser> user_accounts_;
    std::string instance_name_;
    std::uint16_t imap_port_ = 0;
    std::uint16_t lmtp_port_ = 0;
    // Declared after dir_: stops Dovecot before the directory goes away.
    DovecotProcess process_;
};

} // namespace xaps::test
