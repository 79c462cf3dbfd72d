// The package's shipped configuration as a test Dovecot runs it: the files of
// conf.d/ installed under a temporary directory at the places the package
// installs them to, and, in one block after them, only what a test machine
// must change. Everything else a test sees (plugin lists, the worker's
// listeners, its limits) is what users run.
#pragma once

#include "dovecot-config.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xaps::test {

// Where the package installs the admin's conffile: Debian's dovecot.conf
// reads conf.d/*.conf.
inline constexpr const char *installed_conffile_path = "/etc/dovecot/conf.d/95-xaps.conf";
// The file debian/postinst writes on Dovecot 2.3 when the enable file
// includes it: the push_notification_driver slot that names xaps.
inline constexpr const char *push_driver_slot_path =
    "/etc/dovecot/conf.d/xaps-push-driver.conf.ext";

// `text` with the path of every `!include` and `!include_try` line that
// names an absolute path moved under `root` (root + path). Every included
// path, as `text` names it (relative ones too, which stay as they are), is
// appended to *included_r.
std::string includes_moved_under(const std::string &root, const std::string &text,
                                 std::vector<std::string> *included_r);

// Installs the shipped conffile (95-xaps.conf) and the enable file it
// includes (xaps-enable.conf.ext), read from their source paths, under `root`
// at the places the package installs them, their includes moved under
// `root`; and, when the enable file includes push_driver_slot_path, the slot
// file postinst writes there on a machine whose configuration uses no other
// push_notification driver. Throws xaps::Error when a shipped file includes
// anything else, so that a new include cannot silently go missing here.
// Returns root + installed_conffile_path.
std::string install_shipped_configuration(const std::string &root,
                                          const std::string &conffile_source,
                                          const std::string &enable_file_source);

struct TestMachineOverrides {
    // The mail plugin directory the test machine loads plugins from.
    std::string mail_plugin_dir;
    // false: the shipped plugin lists are taken away in imap, lmtp and lda.
    bool plugin_enabled = true;
    // The xaps-worker to run; empty: `service xaps` is switched off.
    std::string worker_executable;
    // Where dovecot-lda logs.
    std::string lda_log_path;
    // Runs under the address sanitizer (scripts/sanitize.sh, Dovecot 2.3).
    bool sanitizer = false;
    // The mock APNs: its port (0 leaves xaps_apns_port unset) and CA file.
    std::uint16_t apns_port = 0;
    std::string apns_ca_file;
    // The test PKI's client certificate and key; empty: none.
    std::string apns_cert_file;
    std::string apns_key_file;
    std::string db_path;
    // The test's own xaps (2.3: plugin { }) settings, after the machine's: a
    // value replaces the machine's for the same key; an empty value removes
    // the machine's, or, for a key the machine does not set, sets it empty,
    // as a later configuration file would.
    std::map<std::string, std::string> test_settings;
};

// The configuration block, after the shipped files, with what a test machine
// must change in them, each with a comment saying why. Together with the
// includes that point into the instance directory (includes_moved_under),
// these are all the differences from the shipped configuration:
//   - the shipped files and the slot file are read from the instance
//     directory, at the same places under it as on a real machine;
//   - mail_plugin_dir: the plugin built in this tree, next to links to
//     Dovecot's own notify, push_notification (and sieve);
//   - service xaps: executable is the worker built in this tree;
//     with DovecotOptions::enable_worker false the service is switched off;
//   - with DovecotOptions::enable_plugin false the plugin lists of imap, lmtp
//     and lda are taken away;
//   - protocol lda: log_path, a file of its own (the LDA runs as the mail
//     user and cannot write the instance's log);
//   - xaps_apns_host/port/ca_file: the mock APNs on loopback and its CA;
//   - xaps_apns_cert_file/key_file: the test PKI (credentials that the
//     shipped file leaves to the admin);
//   - xaps_db_path: the store inside the instance directory;
//   - sanitizer runs only: import_environment, default_vsz_limit 0 and the
//     worker's vsz_limit 0;
//   - what a test asks for itself: DovecotOptions::plugin_settings here,
//     sieve_script and extra_config after this block.
// The worker's user is the shipped one: the test machine's worker user is
// also named xaps (test-users.h). What precedes the shipped files (base_dir,
// state_dir, logs, users, IMAP and LMTP listeners on free loopback ports,
// test_machine_config()) stands in for dovecot-core's own configuration, not
// for the package's.
std::string test_machine_overrides(const TestMachineOverrides &overrides,
                                   const DovecotVersion &syntax = installed_dovecot_version());

} // namespace xaps::test
