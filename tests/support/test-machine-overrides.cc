#include "test-machine-overrides.h"
#include "test-files.h"

#include "xaps-error.h"

#include <filesystem>
#include <set>
#include <sstream>
#include <string_view>

namespace fs = std::filesystem;

namespace xaps::test {

namespace {

constexpr std::string_view include_keywords[] = {"!include_try", "!include"};

// The header debian/postinst writes above the slot, so that the slot file
// reads as on an installed machine.
constexpr const char *push_driver_slot_text =
    "# Written by the dovecot-xaps package (postinst), not to be edited: the\n"
    "# xaps push_notification driver in the first slot that your configuration\n"
    "# leaves free. After adding or removing another driver, recompute it with\n"
    "#   dpkg-reconfigure dovecot-xaps\n"
    "plugin {\n"
    "  push_notification_driver = xaps\n"
    "}\n";

// The included path when `line` is an include, empty otherwise; *path_start_r
// is where the path begins in `line`.
std::string_view included_path(std::string_view line, std::size_t *path_start_r) {
    const std::size_t start = line.find_first_not_of(" \t");
    if (start == std::string_view::npos) {
        return {};
    }
    for (std::string_view keyword : include_keywords) {
        if (line.substr(start, keyword.size()) != keyword) {
            continue;
        }
        const std::size_t after = start + keyword.size();
        if (after >= line.size() || (line[after] != ' ' && line[after] != '\t')) {
            return {};
        }
        const std::size_t path_start = line.find_first_not_of(" \t", after);
        if (path_start == std::string_view::npos) {
            return {};
        }
        const std::size_t path_end = line.find_last_not_of(" \t\r");
        *path_start_r = path_start;
        return line.substr(path_start, path_end + 1 - path_start);
    }
    return {};
}

// `installed_path` under `root`, its directories created.
std::string install_text(const std::string &root, const std::string &installed_path,
                         const std::string &text) {
    const std::string path = root + installed_path;
    make_directory(fs::path(path).parent_path().string(), 0755);
    write_file(path, text, 0644);
    return path;
}

std::string read_shipped(const std::string &source) {
    if (!fs::exists(source)) {
        throw Error(ErrorKind::config, "the shipped configuration file is missing: " + source);
    }
    return read_file(source);
}

// What a test machine sets, in the syntax at hand: on 2.3 inside plugin { }
// (indented), on 2.4 global and quoted.
class SettingsBlock {
public:
    explicit SettingsBlock(const DovecotVersion &syntax) : syntax_2_4_(syntax.at_least(2, 4)) {}

    void add(const std::string &why, const std::string &key, const std::string &value) {
        const std::string indent = syntax_2_4_ ? "" : "  ";
        const std::string shown = syntax_2_4_ ? config_2_4_quoted(value) : value;
        text_ << indent << "# " << why << "\n"
              << indent << key << " =" << (shown.empty() ? "" : " " + shown) << "\n";
    }
    std::string text() const {
        if (text_.str().empty()) {
            return {};
        }
        return syntax_2_4_ ? text_.str() : "plugin {\n" + text_.str() + "}\n";
    }

private:
    bool syntax_2_4_;
    std::ostringstream text_;
};

std::string plugins_taken_away(const std::string &protocol, const DovecotVersion &syntax) {
    if (syntax.at_least(2, 4)) {
        return "protocol " + protocol +
               " {\n"
               "  mail_plugins {\n"
               "    notify = no\n"
               "    push_notification = no\n"
               "    xaps = no\n"
               "  }\n"
               "}\n";
    }
    // Nothing else on the test machine adds mail plugins before this.
    return "protocol " + protocol +
           " {\n"
           "  mail_plugins =\n"
           "}\n";
}

} // namespace

std::string includes_moved_under(const std::string &root, const std::string &text,
                                 std::vector<std::string> *included_r) {
    std::string out;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        std::size_t path_start = 0;
        const std::string_view path = included_path(line, &path_start);
        if (!path.empty()) {
            included_r->emplace_back(path);
            if (path.front() == '/') {
                line = line.substr(0, path_start) + root + std::string(path);
            }
        }
        out += line;
        if (!lines.eof()) {
            out += '\n';
        }
    }
    return out;
}

std::string install_shipped_configuration(const std::string &root,
                                          const std::string &conffile_source,
                                          const std::string &enable_file_source) {
    std::vector<std::string> conffile_includes;
    const std::string conffile =
        includes_moved_under(root, read_shipped(conffile_source), &conffile_includes);
    const std::string enable_file_name = fs::path(enable_file_source).filename().string();
    if (conffile_includes.size() != 1 ||
        fs::path(conffile_includes[0]).filename() != enable_file_name) {
        throw Error(ErrorKind::config, conffile_source + " must include " + enable_file_name +
                                           " and nothing else, by its installed path");
    }
    const std::string enable_file_path = conffile_includes[0];

    std::vector<std::string> enable_file_includes;
    const std::string enable_file =
        includes_moved_under(root, read_shipped(enable_file_source), &enable_file_includes);
    for (const auto &included : enable_file_includes) {
        if (included != push_driver_slot_path) {
            throw Error(ErrorKind::config, enable_file_source + " includes " + included +
                                               ", which the test machine does not install");
        }
        install_text(root, push_driver_slot_path, push_driver_slot_text);
    }
    install_text(root, enable_file_path, enable_file);
    return install_text(root, installed_conffile_path, conffile);
}

std::string test_machine_overrides(const TestMachineOverrides &overrides,
                                   const DovecotVersion &syntax) {
    const bool syntax_2_4 = syntax.at_least(2, 4);
    const bool sanitizer = overrides.sanitizer && !syntax_2_4;
    std::ostringstream conf;
    conf << "# What this test machine changes in the shipped configuration.\n"
         << "# The plugin built in this tree, next to links to Dovecot's own plugins.\n"
         << "mail_plugin_dir = " << overrides.mail_plugin_dir << "\n";
    if (sanitizer) {
        conf << "# The ASan runtime (LD_PRELOAD) and its options for Dovecot's processes.\n"
             << "import_environment = TZ CORE_OUTOFMEM CORE_ERROR LD_PRELOAD ASAN_OPTIONS "
                "UBSAN_OPTIONS LSAN_OPTIONS\n"
             << "# ASan's shadow memory needs an unlimited address space.\n"
             << "default_vsz_limit = 0\n";
    }
    conf << "protocol lda {\n"
         << "  # dovecot-lda runs as the mail user, who cannot write the instance's log.\n"
         << "  log_path = " << overrides.lda_log_path << "\n"
         << "}\n";
    if (!overrides.plugin_enabled) {
        conf << "# The test runs without the xaps plugin (DovecotOptions::enable_plugin).\n"
             << plugins_taken_away("imap", syntax) << plugins_taken_away("lmtp", syntax)
             << plugins_taken_away("lda", syntax);
    }
    conf << "service xaps {\n";
    if (overrides.worker_executable.empty()) {
        conf << "  # The test runs without the worker (DovecotOptions::enable_worker): Dovecot\n"
             << "  # starts a service only when `protocols` lists the service's protocol.\n"
             << "  protocol = none\n";
    } else {
        conf << "  # The worker built in this tree, not the installed one.\n"
             << "  executable = " << overrides.worker_executable << "\n";
    }
    if (sanitizer) {
        conf << "  # ASan's shadow memory needs an unlimited address space.\n"
             << "  vsz_limit = 0\n";
    }
    conf << "}\n";

    SettingsBlock settings(syntax);
    std::set<std::string> machine_keys;
    const auto machine_setting = [&](const std::string &why, const std::string &key,
                                     const std::string &value) {
        machine_keys.insert(key);
        if (!value.empty() && !overrides.test_settings.contains(key)) {
            settings.add(why, key, value);
        }
    };
    machine_setting("The mock APNs, on loopback.", "xaps_apns_host", "127.0.0.1");
    machine_setting("The mock APNs's free port.", "xaps_apns_port",
                    overrides.apns_port == 0 ? "" : std::to_string(overrides.apns_port));
    machine_setting("The test CA, which signed the mock APNs's certificate.", "xaps_apns_ca_file",
                    overrides.apns_ca_file);
    machine_setting("The test PKI's client certificate: credentials are the admin's to add.",
                    "xaps_apns_cert_file", overrides.apns_cert_file);
    machine_setting("Its key, root's only as 95-xaps.conf asks.", "xaps_apns_key_file",
                    overrides.apns_key_file);
    machine_setting("The store inside the instance directory, not /var/lib/dovecot-xaps.",
                    "xaps_db_path", overrides.db_path);
    for (const auto &[key, value] : overrides.test_settings) {
        if (!value.empty()) {
            settings.add("The test's own (DovecotOptions::plugin_settings).", key, value);
        } else if (!machine_keys.contains(key)) {
            settings.add("The test's own (DovecotOptions::plugin_settings): emptied, as by a "
                         "later file.",
                         key, value);
        }
    }
    conf << settings.text();
    return conf.str();
}

} // namespace xaps::test
