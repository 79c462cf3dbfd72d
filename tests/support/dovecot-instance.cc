#include "dovecot-instance.h"
#include "dovecot-config.h"
#include "test-files.h"

#include "free-ports.h"
#include "xaps-error.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace xaps::test {

namespace {

constexpr const char *header = "# Written by xaps::test::DovecotInstance for one test run.\n";
// DovecotOptions::system_users: alice's account is xaps-test-alice.
constexpr const char *system_user_prefix = "xaps-test-";
// The package's conffile and the file it includes, in this tree (the Dovecot
// 2.4 variants on 2.4; tests/support/meson.build).
constexpr const char *shipped_conffile = XAPS_SHIPPED_CONFFILE;
constexpr const char *shipped_enable_file = XAPS_SHIPPED_ENABLE_FILE;
constexpr const char *stock_module_dir = "/usr/lib/dovecot/modules";
constexpr const char *stock_modules[] = {"lib15_notify_plugin.so",
                                         "lib20_push_notification_plugin.so"};
// Pigeonhole's LDA/LMTP plugin, for DovecotOptions::sieve_script.
constexpr const char *sieve_module = "lib90_sieve_plugin.so";
// Dovecot 2.4's config process learns settings only from modules here (a
// compiled-in path), and refuses the xaps_* settings without ours.
constexpr const char *settings_module_dir = "/usr/lib/dovecot/modules/settings";
// The built libxaps_settings.so (Dovecot 2.4), empty on 2.3 (tests/support/meson.build).
constexpr const char *built_settings_module = XAPS_SETTINGS_MODULE_PATH;

void copy_owned(const std::string &from, const std::string &to, mode_t mode,
                const SystemUser &owner) {
    std::error_code error;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, error);
    if (error || ::chmod(to.c_str(), mode) < 0 || ::chown(to.c_str(), owner.uid, owner.gid) < 0) {
        throw Error(ErrorKind::config,
                    "cannot copy " + from + " to " + to + (error ? ": " + error.message() : ""));
    }
}

std::string unique_instance_name() {
    static std::atomic<unsigned> counter{0};
    return "xaps-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

// Copies the built settings module into settings_module_dir unless the same
// file is there already; rename() so that a config process starting meanwhile
// sees the old file or the new one, never half of it.
void install_settings_module() {
    const std::string installed = std::string(settings_module_dir) + "/" +
                                  fs::path(built_settings_module).filename().string();
    if (!fs::exists(built_settings_module)) {
        throw Error(ErrorKind::config,
                    std::string("the xaps settings module is not built: ") + built_settings_module);
    }
    if (read_file(installed) == read_file(built_settings_module)) {
        return;
    }
    fs::create_directories(settings_module_dir);
    const std::string temporary = installed + ".tmp-" + std::to_string(::getpid());
    std::error_code error;
    fs::copy_file(built_settings_module, temporary, fs::copy_options::overwrite_existing, error);
    if (error || ::chmod(temporary.c_str(), 0644) < 0 ||
        ::rename(temporary.c_str(), installed.c_str()) < 0) {
        ::unlink(temporary.c_str());
        throw Error(ErrorKind::config, "cannot install " + installed);
    }
}

} // namespace

// The ASan runtime in LD_PRELOAD: the plugin is instrumented but runs inside
// Dovecot's own binaries, which get the runtime through import_environment,
// and ASan's shadow memory needs an unlimited address space (vsz_limit 0).
bool sanitizer_run() {
    const char *value = std::getenv("XAPS_TEST_SANITIZER");
    return value != nullptr && std::string_view(value) == "1";
}

DovecotInstance::DovecotInstance(DovecotOptions options)
    : options_(std::move(options)), dir_(std::make_unique<TemporaryDirectory>()),
      mail_user_(ensure_system_user(mail_user_name)),
      worker_user_(ensure_system_user(worker_user_name)), users_{"alice", "bob"},
      instance_name_(unique_instance_name()), process_(conf_path(), dir()) {
    users_.insert(users_.end(), options_.extra_users.begin(), options_.extra_users.end());
    if (options_.system_users) {
        for (const auto &user : users_) {
            user_accounts_[user] = ensure_system_user(system_user_prefix + user);
        }
    }
    auto ports = find_free_tcp_ports(2);
    imap_port_ = ports[0];
    lmtp_port_ = ports[1];
    prepare_directory();
}

const SystemUser &DovecotInstance::account_of(const std::string &user) const {
    const auto account = user_accounts_.find(user);
    return account == user_accounts_.end() ? mail_user_ : account->second;
}

bool DovecotInstance::has_plugin() const {
    return options_.enable_plugin && !options_.plugin_path.empty();
}

bool DovecotInstance::has_worker() const {
    return options_.enable_worker && !options_.worker_path.empty();
}

TestMachine DovecotInstance::test_machine() const {
    TestMachine machine;
    machine.dir = dir();
    machine.base_dir = base_dir();
    machine.log_path = log_path();
    machine.instance_name = instance_name_;
    machine.mail_user = mail_user_;
    machine.users = users_;
    machine.user_accounts = user_accounts_;
    machine.password = password;
    machine.imap_port = imap_port_;
    machine.lmtp_port = lmtp_port_;
    machine.userdb_fields = options_.userdb_fields;
    machine.lmtp_socket_mode = "0666";
    return machine;
}

void DovecotInstance::prepare_directory() {
    prepare_test_machine(test_machine());
    write_file(lda_log_path(), "", 0666);
    make_directory(db_path(), 0700, &worker_user_);

    const std::string module_dir = dir() + "/modules";
    make_directory(module_dir, 0755, nullptr);
    for (const char *module : stock_modules) {
        fs::create_symlink(std::string(stock_module_dir) + "/" + module, module_dir + "/" + module);
    }
    if (has_plugin()) {
        fs::path plugin = fs::absolute(options_.plugin_path);
        if (!fs::exists(plugin)) {
            throw Error(ErrorKind::config, "the xaps plugin is not built: " + plugin.string());
        }
        fs::create_symlink(plugin, module_dir + "/" + plugin.filename().string());
    }
    if (installed_dovecot_version().at_least(2, 4)) {
        install_settings_module();
    }
    if (has_worker() && !fs::exists(options_.worker_path)) {
        throw Error(ErrorKind::config, "xaps-worker is not built: " + options_.worker_path);
    }
    if (!options_.pki_dir.empty()) {
        copy_credentials();
    }
    if (!options_.sieve_script.empty()) {
        fs::create_symlink(std::string(stock_module_dir) + "/" + sieve_module,
                           module_dir + "/" + sieve_module);
        // Pigeonhole stores the compiled script next to it, as the mail user.
        make_directory(dir() + "/sieve", 0755, &mail_user_);
        write_file(dir() + "/sieve/filter.sieve", options_.sieve_script, 0644);
    }
    install_shipped_configuration(dir(), shipped_conffile, shipped_enable_file);
    write_file(conf_path(), config_text(), 0644);
}

void DovecotInstance::copy_credentials() {
    const std::string apns_dir = dir() + "/apns";
    make_directory(apns_dir, 0700, &worker_user_);
    copy_owned(options_.pki_dir + "/ca.pem", apns_dir + "/ca.pem", 0644, worker_user_);
    copy_owned(options_.pki_dir + "/client.pem", apns_dir + "/client.pem", 0644, worker_user_);
    // Root's only, as 95-xaps.conf asks: the worker reads it before it drops
    // root, and warns about a key its own user can read.
    copy_owned(options_.pki_dir + "/client.key", apns_dir + "/client.key", 0600,
               SystemUser{"root"});
}

TestMachineOverrides DovecotInstance::machine_overrides() const {
    TestMachineOverrides overrides;
    overrides.mail_plugin_dir = dir() + "/modules";
    overrides.plugin_enabled = has_plugin();
    if (has_worker()) {
        overrides.worker_executable = fs::absolute(options_.worker_path).string();
    }
    overrides.lda_log_path = lda_log_path();
    overrides.sanitizer = sanitizer_run();
    overrides.apns_port = options_.apns_port;
    if (!options_.pki_dir.empty()) {
        overrides.apns_ca_file = dir() + "/apns/ca.pem";
        overrides.apns_cert_file = dir() + "/apns/client.pem";
        overrides.apns_key_file = dir() + "/apns/client.key";
    }
    overrides.db_path = db_path();
    overrides.test_settings = options_.plugin_settings;
    return overrides;
}

std::string DovecotInstance::config_text() const {
    const bool syntax_2_4 = installed_dovecot_version().at_least(2, 4);
    std::ostringstream conf;
    if (syntax_2_4) {
        // The two versions come first: they select the syntax and the defaults.
        conf << "dovecot_config_version = 2.4.0\n"
             << "dovecot_storage_version = 2.4.0\n";
    }
    conf << header << "\n# The test machine's Dovecot, in place of dovecot-core's configuration.\n"
         << test_machine_config(test_machine()) << "auth_mechanisms = plain\n"
         << "\n# The package's configuration as shipped, installed where the package puts it.\n"
         << "!include " << dir() << installed_conffile_path << "\n"
         << "\n"
         << test_machine_overrides(machine_overrides()) << sieve_config(syntax_2_4);
    if (!options_.extra_config.empty()) {
        conf << "\n# extra_config\n" << options_.extra_config << "\n";
    }
    return conf.str();
}

std::string DovecotInstance::sieve_config(bool syntax_2_4) const {
    if (options_.sieve_script.empty()) {
        return {};
    }
    const std::string script = dir() + "/sieve/filter.sieve";
    if (syntax_2_4) {
        return "\n# sieve_script\n"
               "protocol lmtp {\n"
               "  mail_plugins {\n"
               "    sieve = yes\n"
               "  }\n"
               "}\n"
               "sieve_script personal {\n"
               "  path = " +
               script +
               "\n"
               "}\n";
    }
    return "\n# sieve_script\n"
           "protocol lmtp {\n"
           "  mail_plugins = $mail_plugins sieve\n"
           "}\n"
           "plugin {\n"
           "  sieve = " +
           script + "\n}\n";
}

void DovecotInstance::start() {
    process_.start({imap_port_, has_worker() ? worker_socket_path() : "", options_.start_timeout});
}

} // namespace xaps::test
