#include "worker-settings.h"

#include "dovecot-cxx.h"
#include "xaps-error.h"

#include <cstddef>
#include <map>
#include <string>

namespace {

// Dovecot allocates and fills this from its settings parser: it stays a
// trivial C struct.
struct xaps_worker_settings {
    ARRAY_TYPE(const_string) plugin_envs;
};

const struct setting_define xaps_worker_setting_defines[] = {
    {SET_STRLIST, static_cast<enum setting_flags>(0), "plugin",
     offsetof(struct xaps_worker_settings, plugin_envs), nullptr},
    // SETTING_DEFINE_LIST_END, with the enum casts C++ needs.
    {static_cast<enum setting_type>(0), static_cast<enum setting_flags>(0), nullptr, 0, nullptr},
};

const struct xaps_worker_settings xaps_worker_default_settings = {};

const struct setting_parser_info xaps_worker_setting_parser_info = {
    "xaps",
    xaps_worker_setting_defines,
    &xaps_worker_default_settings,
    SIZE_MAX,
    sizeof(struct xaps_worker_settings),
    SIZE_MAX,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

} // namespace

namespace xaps {

XapsSettings read_worker_settings(struct master_service *service) {
    const struct setting_parser_info *roots[] = {&xaps_worker_setting_parser_info, nullptr};
    // plugin { } belongs to the mail settings module: ask for it explicitly.
    const char *extra_modules[] = {"mail", nullptr};
    struct master_service_settings_input input = {};
    input.roots = roots;
    input.module = "xaps";
    input.extra_modules = extra_modules;
    input.service = "xaps";
    struct master_service_settings_output output = {};
    const char *error = nullptr;
    if (master_service_settings_read(service, &input, &output, &error) < 0) {
        throw Error(ErrorKind::config, std::string("reading Dovecot's configuration: ") + error);
    }
    auto *set = static_cast<const struct xaps_worker_settings *>(
        master_service_settings_get_others(service)[0]);

    std::map<std::string, std::string, std::less<>> plugin;
    if (array_is_created(&set->plugin_envs)) {
        unsigned int count = 0;
        const char *const *envs = array_get(&set->plugin_envs, &count);
        for (unsigned int i = 0; i + 1 < count; i += 2) {
            plugin.emplace(envs[i], envs[i + 1]);
        }
    }
    return read_xaps_settings([&plugin](std::string_view name) -> std::optional<std::string> {
        auto it = plugin.find(name);
        return it == plugin.end() ? std::nullopt : std::optional<std::string>(it->second);
    });
}

} // namespace xaps
