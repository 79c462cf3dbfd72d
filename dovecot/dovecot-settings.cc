#include "dovecot-settings.h"

#include "dovecot-cxx.h"
#include "xaps-error.h"
#include "xaps-setting-table.h"

#include <array>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace xaps::dovecot {

#if DOVECOT_PREREQ(2, 4, 0)

namespace {

// Filled by Dovecot's settings parser, freed with settings_free(): a C struct.
struct xaps_dovecot_settings {
    pool_t pool;
    const char *values[xaps_setting_table.size()]; // in table order
};

// Dovecot 2.4 refuses a setting that no loaded settings module declares:
// every row of the table is declared, as a string whatever its type:
// common/xaps-settings.cc stays the one parser of the values, with the same
// units and errors as on 2.3. SET_STR_NOVARS: the values are taken as
// written, as the 2.3 worker read them; a '%' in a password is a '%'. Empty
// means unset: the defaults are the table's.
constexpr auto setting_defines = [] {
    std::array<struct setting_define, xaps_setting_table.size() + 1> defines{};
    for (std::size_t i = 0; i < xaps_setting_table.size(); i++) {
        defines[i].type = SET_STR_NOVARS;
        defines[i].flags = static_cast<enum setting_flags>(0);
        defines[i].key = xaps_setting_table[i].name;
        defines[i].offset =
            offsetof(struct xaps_dovecot_settings, values) + i * sizeof(const char *);
    }
    return defines; // the last entry stays zero: SETTING_DEFINE_LIST_END
}();

constexpr struct xaps_dovecot_settings default_settings = [] {
    struct xaps_dovecot_settings defaults {};
    for (const char *&value : defaults.values) {
        value = "";
    }
    return defaults;
}();

} // namespace

const struct setting_parser_info xaps_setting_parser_info = {
    .name = "xaps",
    .plugin_dependency = nullptr,
    .defines = setting_defines.data(),
    .defaults = &default_settings,
    .default_settings = nullptr,
    .struct_size = sizeof(struct xaps_dovecot_settings),
    .pool_offset1 = 1 + offsetof(struct xaps_dovecot_settings, pool),
    .setting_apply = nullptr,
    .check_func = nullptr,
    .ext_check_func = nullptr,
};

SettingLookup event_setting_lookup(struct event *event) {
    const struct xaps_dovecot_settings *set = nullptr;
    const char *error = nullptr;
    // The settings_get() macro passes set_r as void *, which C++ does not
    // convert to const void **: call the function itself.
    if ((settings_get)(event, &xaps_setting_parser_info, static_cast<enum settings_get_flags>(0),
                       __FILE__, __LINE__, reinterpret_cast<const void **>(&set), &error) < 0) {
        throw Error(ErrorKind::config, std::string("reading the xaps settings: ") + error);
    }
    std::shared_ptr<const struct xaps_dovecot_settings> owned(
        set,
        [](const struct xaps_dovecot_settings *settings) noexcept { settings_free(settings); });
    return [owned](std::string_view name) -> std::optional<std::string> {
        for (std::size_t i = 0; i < xaps_setting_table.size(); i++) {
            if (name == xaps_setting_table[i].name) {
                const char *value = owned->values[i];
                if (value == nullptr || *value == '\0') {
                    return std::nullopt;
                }
                return std::string(value);
            }
        }
        throw Error(ErrorKind::internal, "setting " + std::string(name) + " is not declared");
    };
}

SettingLookup service_setting_lookup(struct master_service *service) {
    const char *error = nullptr;
    if (master_service_settings_read_simple(service, &error) < 0) {
        throw Error(ErrorKind::config, std::string("reading Dovecot's configuration: ") + error);
    }
    return event_setting_lookup(master_service_get_event(service));
}

#else // Dovecot 2.3

namespace {

// The global plugin { } block as a list of keys and values. Dovecot fills
// this from its settings parser: a trivial C struct.
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

SettingLookup event_setting_lookup(struct event *) {
    throw Error(ErrorKind::internal, "Dovecot 2.3 has no typed xaps settings");
}

SettingLookup service_setting_lookup(struct master_service *service) {
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

    auto plugin = std::make_shared<std::map<std::string, std::string, std::less<>>>();
    if (array_is_created(&set->plugin_envs)) {
        unsigned int count = 0;
        const char *const *envs = array_get(&set->plugin_envs, &count);
        for (unsigned int i = 0; i + 1 < count; i += 2) {
            plugin->emplace(envs[i], envs[i + 1]);
        }
    }
    return [plugin](std::string_view name) -> std::optional<std::string> {
        auto it = plugin->find(name);
        return it == plugin->end() ? std::nullopt : std::optional<std::string>(it->second);
    };
}

#endif

} // namespace xaps::dovecot
