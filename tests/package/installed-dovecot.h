// The installed Dovecot with the installed dovecot-xaps package, run from a
// private copy of /etc/dovecot: the package's conffile (conf.d/95-xaps.conf)
// and the file it includes from /usr/share/dovecot-xaps are what runs. The
// copy is changed only where a test machine needs it: runtime, state and log
// paths in a temporary directory, IMAP and LMTP on free loopback ports,
// ssl = no, and a password file for the test users instead of the system's
// users. Whatever a test adds to plugin { } (credentials, the APNs endpoint)
// goes into a separate file included last. Only installed programs run:
// /usr/sbin/dovecot, /usr/lib/dovecot/xaps-worker, /usr/bin/doveadm. Needs root.
#pragma once

#include "dovecot-process.h"
#include "temporary-directory.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace xaps::test {

inline constexpr const char *installed_config_dir = "/etc/dovecot";
inline constexpr const char *installed_worker = "/usr/lib/dovecot/xaps-worker";
inline constexpr const char *installed_doveadm = "/usr/bin/doveadm";
inline constexpr const char *installed_doveconf = "/usr/bin/doveconf";

class InstalledDovecot {
public:
    static constexpr const char *password = "pass";

    // Copies /etc/dovecot into a temporary directory and prepares it.
    InstalledDovecot();
    // Stops Dovecot and removes the directory (XAPS_KEEP_TEST_DIRS=1 keeps it).
    ~InstalledDovecot() = default;
    InstalledDovecot(const InstalledDovecot &) = delete;
    InstalledDovecot &operator=(const InstalledDovecot &) = delete;

    // Settings for the plugin { } block of the file that start() includes
    // after everything else; call before start().
    void set_plugin_settings(std::map<std::string, std::string> settings);
    // Copies `from` into a root-only directory of the instance, mode 0600
    // owned by root, as 95-xaps.conf tells admins to keep key files, and
    // returns the copy's path.
    std::string install_private_file(const std::string &from);
    // The xaps_apns_* settings for a mock APNs on loopback `port`, with the
    // test PKI's key files installed as 95-xaps.conf tells the admin:
    // root-only, read by the worker before it becomes the xaps user.
    std::map<std::string, std::string> mock_apns_settings(std::uint16_t port);
    // The same for a file holding `content` exactly, e.g. a password.
    std::string install_private_text(const std::string &name, const std::string &content);
    // Lines in Dovecot's own syntax for the file that start() includes last,
    // after the plugin settings: for values set_plugin_settings() would
    // quote, like "key = <file". Call before start().
    void set_raw_config(std::string config) { raw_config_ = std::move(config); }

    // Runs `dovecot -F -c <copy>/dovecot.conf` and returns once IMAP accepts
    // connections and the xaps worker answered the protocol handshake.
    // Throws xaps::Error with Dovecot's output and log otherwise.
    void start();
    // SIGTERM, then waits for the master (SIGKILL after 20 s).
    void stop() { process_.stop(); }
    // Copies /etc/dovecot again, as it is now (after a package upgrade), over
    // the instance's copy, with the same test-machine changes. A running
    // Dovecot reads it when reloaded.
    void copy_installed_config_again();
    // `doveadm reload`, what the package's maintainer scripts do to the
    // machine's Dovecot: the master reads its configuration again and
    // replaces its service processes.
    CommandResult reload() const { return doveadm({"reload"}); }
    bool running() const { return process_.running(); }

    std::uint16_t imap_port() const { return imap_port_; }
    std::uint16_t lmtp_port() const { return lmtp_port_; }
    const std::string &dir() const { return dir_.path(); }
    std::string config_dir() const { return dir() + "/etc-dovecot"; }
    std::string conf_path() const { return config_dir() + "/dovecot.conf"; }
    std::string base_dir() const { return dir() + "/run"; }
    std::string worker_socket_path() const { return base_dir() + "/xaps"; }
    std::string admin_socket_path() const { return base_dir() + "/xaps-admin"; }
    const std::string &log_path() const { return process_.log_path(); }
    // The test users (alice, bob); the password is `password` for each.
    const std::vector<std::string> &users() const { return users_; }
    // The Unix user every mail process runs as.
    const std::string &mail_user() const { return mail_user_; }

    std::string log() const { return process_.log(); }
    std::vector<std::string> log_lines() const { return process_.log_lines(); }
    // Log lines with an Error, Fatal or Panic, or a process killed by a signal.
    std::vector<std::string> log_errors() const;
    // Waits until the log contains `text`.
    bool wait_for_log(std::string_view text, Milliseconds timeout) const {
        return process_.wait_for_log(text, timeout);
    }
    // What Dovecot printed on stdout/stderr (configuration errors land here).
    std::string output() const { return process_.output(); }

    // The master's child running `executable`, if there is one.
    std::optional<ServiceProcess> service_process(const std::string &executable) const {
        return process_.service_process(executable);
    }
    // /usr/bin/doveadm -c <the copy's dovecot.conf> <args>, stopped after 60 s.
    CommandResult doveadm(const std::vector<std::string> &args) const;
    // /usr/bin/doveconf -c <the copy's dovecot.conf> <args>, the same way.
    CommandResult doveconf(const std::vector<std::string> &args) const;

private:
    void copy_installed_config();
    void write_machine_config() const;
    void append_test_includes();
    CommandResult run(const std::vector<std::string> &argv) const;

    TemporaryDirectory dir_;
    std::vector<std::string> users_{"alice", "bob"};
    std::string mail_user_ = "mail";
    std::map<std::string, std::string> plugin_settings_;
    std::string raw_config_;
    std::uint16_t imap_port_ = 0;
    std::uint16_t lmtp_port_ = 0;
    // Declared after dir_: stops Dovecot before the directory goes away.
    DovecotProcess process_;
    bool includes_appended_ = false;
};

} // namespace xaps::test
