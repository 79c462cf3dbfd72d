#include "dovecot-instance.h"
#include "test-files.h"

#include "free-ports.h"
#include "xaps-error.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace xaps::test {

namespace {

constexpr const char *dovecot_binary = "/usr/sbin/dovecot";
constexpr const char *stock_module_dir = "/usr/lib/dovecot/modules";
constexpr const char *stock_modules[] = {"lib15_notify_plugin.so",
                                         "lib20_push_notification_plugin.so"};
// Dovecot 2.4's config process learns settings only from modules here (a
// compiled-in path), and refuses the xaps_* settings without ours.
constexpr const char *settings_module_dir = "/usr/lib/dovecot/modules/settings";
// The built libxaps_settings.so (Dovecot 2.4), empty on 2.3 (tests/support/meson.build).
constexpr const char *built_settings_module = XAPS_SETTINGS_MODULE_PATH;

void make_directory(const std::string &path, mode_t mode, const SystemUser *owner) {
    fs::create_directories(path);
    if (::chmod(path.c_str(), mode) < 0 ||
        (owner != nullptr && ::chown(path.c_str(), owner->uid, owner->gid) < 0)) {
        throw Error(ErrorKind::internal, "cannot set up " + path + ": " + std::strerror(errno));
    }
}

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

// scripts/sanitize.sh sets XAPS_TEST_SANITIZER=1 and runs the tests with
// the ASan runtime in LD_PRELOAD: the plugin is instrumented but runs inside
// Dovecot's own binaries, which get the runtime through import_environment,
// and ASan's shadow memory needs an unlimited address space (vsz_limit 0).
bool sanitizer_run() {
    const char *value = std::getenv("XAPS_TEST_SANITIZER");
    return value != nullptr && std::string_view(value) == "1";
}

// "2.3.19.1 (9b53102964)", "2.4.1-4 (7d8c0e5759)".
DovecotVersion parse_dovecot_version(const std::string &text) {
    DovecotVersion version;
    if (std::sscanf(text.c_str(), "%d.%d", &version.major, &version.minor) != 2) {
        throw Error(ErrorKind::internal, "cannot tell the Dovecot version from '" + text + "'");
    }
    return version;
}

DovecotVersion read_dovecot_version() {
    const std::string command = std::string(dovecot_binary) + " --version 2>&1";
    FILE *pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        throw Error(ErrorKind::internal, "cannot run " + command);
    }
    std::string output;
    char buffer[256];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
        output += buffer;
    }
    ::pclose(pipe);
    return parse_dovecot_version(output);
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

// Dovecot 2.4 takes a value in double quotes as it is, %{variables} expanded.
std::string quoted_value(const std::string &value) {
    std::string out = "\"";
    for (char c : value) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out + "\"";
}

} // namespace

std::string config_2_4_quoted(const std::string &value) {
    return quoted_value(value);
}

const DovecotVersion &installed_dovecot_version() {
    static const DovecotVersion version = read_dovecot_version();
    return version;
}

std::string xaps_plugins_config(const std::string &protocol) {
    if (installed_dovecot_version().at_least(2, 4)) {
        return "protocol " + protocol +
               " {\n"
               "  mail_plugins {\n"
               "    notify = yes\n"
               "    push_notification = yes\n"
               "    xaps = yes\n"
               "  }\n"
               "}\n";
    }
    return "protocol " + protocol +
           " {\n"
           "  mail_plugins = $mail_plugins notify push_notification xaps\n"
           "}\n";
}

DovecotInstance::DovecotInstance(DovecotOptions options)
    : options_(std::move(options)), dir_(std::make_unique<TemporaryDirectory>()),
      mail_user_(ensure_system_user(mail_user_name)),
      worker_user_(ensure_system_user(worker_user_name)), users_{"alice", "bob"},
      instance_name_(unique_instance_name()), process_(conf_path(), dir()) {
    users_.insert(users_.end(), options_.extra_users.begin(), options_.extra_users.end());
    auto ports = find_free_tcp_ports(2);
    imap_port_ = ports[0];
    lmtp_port_ = ports[1];
    prepare_directory();
}

bool DovecotInstance::has_plugin() const {
    return options_.enable_plugin && !options_.plugin_path.empty();
}

bool DovecotInstance::has_worker() const {
    return options_.enable_worker && !options_.worker_path.empty();
}

void DovecotInstance::prepare_directory() {
    make_directory(dir() + "/state", 0755, nullptr);
    make_directory(base_dir(), 0755, nullptr);
    make_directory(dir() + "/mail", 0700, &mail_user_);
    make_directory(dir() + "/home", 0700, &mail_user_);
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

    std::string users_file;
    for (const auto &user : users_) {
        users_file += user + ":{PLAIN}" + password + "::::::\n";
    }
    write_file(dir() + "/users", users_file, 0644);
    write_file(conf_path(), config_text(), 0644);
}

void DovecotInstance::copy_credentials() {
    const std::string apns_dir = dir() + "/apns";
    make_directory(apns_dir, 0700, &worker_user_);
    copy_owned(options_.pki_dir + "/ca.pem", apns_dir + "/ca.pem", 0644, worker_user_);
    copy_owned(options_.pki_dir + "/client.pem", apns_dir + "/client.pem", 0644, worker_user_);
    copy_owned(options_.pki_dir + "/client.key", apns_dir + "/client.key", 0600, worker_user_);
}

std::map<std::string, std::string> DovecotInstance::plugin_settings() const {
    std::map<std::string, std::string> settings;
    if (has_plugin()) {
        settings["push_notification_driver"] = "xaps";
    }
    settings["xaps_apns_host"] = "127.0.0.1";
    if (options_.apns_port != 0) {
        settings["xaps_apns_port"] = std::to_string(options_.apns_port);
    }
    if (!options_.pki_dir.empty()) {
        settings["xaps_apns_ca_file"] = dir() + "/apns/ca.pem";
        settings["xaps_apns_cert_file"] = dir() + "/apns/client.pem";
        settings["xaps_apns_key_file"] = dir() + "/apns/client.key";
    }
    settings["xaps_db_path"] = db_path();
    for (const auto &[key, value] : options_.plugin_settings) {
        if (value.empty()) {
            settings.erase(key);
        } else {
            settings[key] = value;
        }
    }
    return settings;
}

std::string DovecotInstance::config_text() const {
    if (installed_dovecot_version().at_least(2, 4)) {
        return config_text_2_4();
    }
    const std::string uid = std::to_string(mail_user_.uid);
    const std::string gid = std::to_string(mail_user_.gid);
    const std::string mail_plugins =
        has_plugin() ? "$mail_plugins notify push_notification xaps" : "$mail_plugins";
    std::ostringstream conf;
    conf << common_settings() << "disable_plaintext_auth = no\n"
         << "auth_mechanisms = plain\n"
         << (sanitizer_run() ? "import_environment = TZ CORE_OUTOFMEM CORE_ERROR LD_PRELOAD "
                               "ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS\n"
                               "default_vsz_limit = 0\n"
                             : "")
         // alice@example.com (an LMTP recipient) and alice are the same user.
         << "auth_username_format = %Ln\n"
         << "first_valid_uid = " << uid << "\n"
         << "postmaster_address = postmaster@example.com\n"
         << "mail_location = maildir:" << dir() << "/mail/%u\n"
         << "mail_plugin_dir = " << dir() << "/modules\n"
         << "\n"
         << "passdb {\n"
         << "  driver = passwd-file\n"
         << "  args = " << dir() << "/users\n"
         << "}\n"
         << "userdb {\n"
         << "  driver = static\n"
         << "  args = uid=" << uid << " gid=" << gid << " home=" << dir() << "/home/%u"
         << (options_.userdb_fields.empty() ? "" : " " + options_.userdb_fields) << "\n"
         << "}\n"
         << "\n"
         << "protocol imap {\n"
         << "  mail_plugins = " << mail_plugins << "\n"
         << "}\n"
         << "protocol lmtp {\n"
         << "  mail_plugins = " << mail_plugins << "\n"
         << "}\n"
         << "\n"
         << listeners_config("127.0.0.1");
    if (has_worker()) {
        conf << "\n" << worker_service_config(sanitizer_run() ? "0" : "2G");
    }
    conf << "\n"
         << "plugin {\n";
    for (const auto &[key, value] : plugin_settings()) {
        conf << "  " << key << " = " << value << "\n";
    }
    conf << "}\n";
    if (!options_.extra_config.empty()) {
        conf << "\n# extra_config\n" << options_.extra_config << "\n";
    }
    return conf.str();
}

std::string DovecotInstance::config_text_2_4() const {
    const std::string uid = std::to_string(mail_user_.uid);
    const std::string gid = std::to_string(mail_user_.gid);
    std::ostringstream conf;
    // The two versions come first: they select the syntax and the defaults.
    conf << "dovecot_config_version = 2.4.0\n"
         << "dovecot_storage_version = 2.4.0\n"
         << common_settings() << "auth_allow_cleartext = yes\n"
         << "auth_mechanisms = plain\n"
         // alice@example.com (an LMTP recipient) and alice are the same user.
         << "auth_username_format = %{user | username | lower}\n"
         << "first_valid_uid = " << uid << "\n"
         << "postmaster_address = postmaster@example.com\n"
         << "mail_driver = maildir\n"
         << "mail_path = " << dir() << "/mail/%{user}\n"
         << "mail_plugin_dir = " << dir() << "/modules\n"
         << "\n"
         << "passdb passwd-file {\n"
         << "  passwd_file_path = " << dir() << "/users\n"
         << "}\n"
         << "userdb static {\n"
         << "  fields {\n"
         << "    uid = " << uid << "\n"
         << "    gid = " << gid << "\n"
         << "    home = " << dir() << "/home/%{user}\n";
    // "key=value key=value", as the 2.3 static userdb's args take them.
    std::istringstream fields(options_.userdb_fields);
    for (std::string field; fields >> field;) {
        const auto equals = field.find('=');
        if (equals == std::string::npos || equals == 0) {
            throw Error(ErrorKind::config, "userdb_fields: '" + field + "' is not key=value");
        }
        conf << "    " << field.substr(0, equals) << " = " << quoted_value(field.substr(equals + 1))
             << "\n";
    }
    conf << "  }\n"
         << "}\n";
    if (has_plugin()) {
        conf << "\n"
             << xaps_plugins_config("imap")
             << xaps_plugins_config("lmtp")
             // The push_notification driver, a named filter since 2.4.
             << "push_notification xaps {\n"
             << "  driver = xaps\n"
             << "}\n";
    }
    // The listeners take the global `listen` (2.4 has no per-listener address).
    conf << "\n" << listeners_config("");
    if (has_worker()) {
        conf << "\n" << worker_service_config("2G");
    }
    conf << "\n";
    for (const auto &[key, value] : plugin_settings()) {
        if (key != "push_notification_driver") { // the named filter above
            conf << key << " = " << quoted_value(value) << "\n";
        }
    }
    if (!options_.extra_config.empty()) {
        conf << "\n# extra_config\n" << options_.extra_config << "\n";
    }
    return conf.str();
}

std::string DovecotInstance::common_settings() const {
    std::ostringstream conf;
    conf << "# Written by xaps::test::DovecotInstance for one test run.\n"
         << "base_dir = " << base_dir() << "\n"
         << "state_dir = " << dir() << "/state\n"
         << "log_path = " << log_path() << "\n"
         << "instance_name = " << instance_name_ << "\n"
         << "protocols = imap lmtp\n"
         << "listen = 127.0.0.1\n"
         << "ssl = no\n";
    return conf.str();
}

std::string DovecotInstance::listeners_config(const std::string &listener_address) const {
    const std::string address =
        listener_address.empty() ? "" : "    address = " + listener_address + "\n";
    std::ostringstream conf;
    conf << "service imap-login {\n"
         << "  inet_listener imap {\n"
         << address << "    port = " << imap_port_ << "\n"
         << "  }\n"
         << "  inet_listener imaps {\n"
         << "    port = 0\n"
         << "  }\n"
         << "}\n"
         << "service lmtp {\n"
         << "  inet_listener lmtp {\n"
         << address << "    port = " << lmtp_port_ << "\n"
         << "  }\n"
         << "  unix_listener lmtp {\n"
         << "    mode = 0666\n"
         << "  }\n"
         << "}\n";
    return conf.str();
}

std::string DovecotInstance::worker_service_config(const std::string &vsz_limit) const {
    std::ostringstream conf;
    conf << "service xaps {\n"
         << "  executable = " << fs::absolute(options_.worker_path).string() << "\n"
         << "  user = " << worker_user_.name << "\n"
         << "  process_limit = 1\n"
         << "  process_min_avail = 1\n"
         << "  vsz_limit = " << vsz_limit << "\n"
         << "  unix_listener xaps {\n"
         << "    user = " << mail_user_.name << "\n"
         << "    mode = 0600\n"
         << "  }\n"
         << "}\n";
    return conf.str();
}

void DovecotInstance::start() {
    process_.start({imap_port_, has_worker() ? worker_socket_path() : "", options_.start_timeout});
}

} // namespace xaps::test
