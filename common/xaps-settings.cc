#include "xaps-settings.h"

#include "duration.h"
#include "xaps-error.h"
#include "xaps-setting-table.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <type_traits>
#include <variant>

namespace xaps {

namespace {

Error invalid(const SettingRow &row, std::string_view problem) {
    return Error(ErrorKind::config, std::string(row.name) + ": " + std::string(problem));
}

std::uint64_t parse_number(const SettingRow &row, std::string_view text) {
    std::uint64_t parsed = 0;
    const char *end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, parsed);
    if (ec != std::errc{} || ptr != end || parsed < row.minimum || parsed > row.maximum) {
        throw invalid(row, "'" + std::string(text.substr(0, 64)) + "' is not a number from " +
                               std::to_string(row.minimum) + " to " + std::to_string(row.maximum));
    }
    return parsed;
}

// As Dovecot reads its own booleans, minus the forms nobody writes.
bool parse_boolean(const SettingRow &row, std::string_view text) {
    auto is = [text](std::string_view word) {
        return text.size() == word.size() &&
               std::equal(text.begin(), text.end(), word.begin(), [](char a, char b) {
                   return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
               });
    };
    if (is("yes")) {
        return true;
    }
    if (is("no")) {
        return false;
    }
    throw invalid(row, "'" + std::string(text.substr(0, 64)) + "' is neither yes nor no");
}

template <typename Duration>
Duration parse_duration_of(const SettingRow &row, std::string_view text) {
    Duration value{};
    try {
        value = std::chrono::duration_cast<Duration>(parse_duration(text));
    } catch (const Error &e) {
        throw invalid(row, e.what());
    }
    // Checked in the field's unit: "500ms" is 0 for a setting kept in seconds.
    const auto milliseconds = std::chrono::duration_cast<std::chrono::milliseconds>(value).count();
    if (static_cast<std::uint64_t>(milliseconds) < row.minimum) {
        throw invalid(row, row.minimum == 1
                               ? "must be more than 0"
                               : "must be at least " + std::to_string(row.minimum) + "ms");
    }
    return value;
}

// As Dovecot reads sizes: a number, then B, k, M, G or T in either case,
// optionally followed by "i" and "B" ("4G", "4 GB", "4GiB"); a bare number
// is bytes. The units are powers of 1024.
std::uint64_t parse_size(const SettingRow &row, std::string_view text) {
    auto refuse = [&]() -> Error {
        return invalid(row, "'" + std::string(text.substr(0, 64)) +
                                "' is not a size (use e.g. 512M, 4G) from " +
                                std::to_string(row.minimum) + " to " + std::to_string(row.maximum) +
                                " bytes");
    };
    std::uint64_t value = 0;
    const char *end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc{}) {
        throw refuse();
    }
    std::string_view unit(ptr, static_cast<std::size_t>(end - ptr));
    while (unit.starts_with(' ')) {
        unit.remove_prefix(1);
    }
    auto take = [&unit](char upper) {
        if (!unit.empty() && (unit.front() == upper || unit.front() == upper - 'A' + 'a')) {
            unit.remove_prefix(1);
            return true;
        }
        return false;
    };
    unsigned shift = 0;
    if (take('K')) {
        shift = 10;
    } else if (take('M')) {
        shift = 20;
    } else if (take('G')) {
        shift = 30;
    } else if (take('T')) {
        shift = 40;
    }
    if (shift > 0) {
        take('I');
    }
    take('B');
    if (!unit.empty() || value > (std::numeric_limits<std::uint64_t>::max() >> shift)) {
        throw refuse();
    }
    value <<= shift;
    if (value < row.minimum || value > row.maximum) {
        throw refuse();
    }
    return value;
}

std::vector<std::string> parse_words(std::string_view text) {
    std::vector<std::string> words;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find_first_of(" ,", start);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        if (end > start) {
            words.emplace_back(text.substr(start, end - start));
        }
        start = end + 1;
    }
    return words;
}

// Stores `text`, parsed as the row says, in the row's field.
void read_setting(const SettingRow &row, std::string_view text, XapsSettings &settings) {
    std::visit(
        [&](auto field) {
            auto &out = settings.*field;
            using Value = std::remove_reference_t<decltype(out)>;
            if constexpr (std::is_same_v<Value, std::string>) {
                out = text;
            } else if constexpr (std::is_same_v<Value, std::vector<std::string>>) {
                out = parse_words(text);
            } else if constexpr (std::is_same_v<Value, bool>) {
                out = parse_boolean(row, text);
            } else if constexpr (std::is_same_v<Value, std::optional<int>>) {
                out = static_cast<int>(parse_number(row, text));
            } else if constexpr (std::is_same_v<Value, std::uint64_t>) {
                out =
                    row.type == SettingType::size ? parse_size(row, text) : parse_number(row, text);
            } else if constexpr (std::is_integral_v<Value>) {
                out = static_cast<Value>(parse_number(row, text));
            } else {
                out = parse_duration_of<Value>(row, text);
            }
        },
        row.field);
}

} // namespace

CredentialKind XapsSettings::credential_kind() const {
    if (!apns_cert_file.empty()) {
        return CredentialKind::pem;
    }
    if (!apns_p12_file.empty()) {
        return CredentialKind::pkcs12;
    }
    if (!apns_token_key_file.empty()) {
        return CredentialKind::token;
    }
    if (!apple_id.empty()) {
        return CredentialKind::apple_id;
    }
    return CredentialKind::none;
}

XapsSettings read_xaps_settings(const SettingLookup &lookup) {
    XapsSettings settings;
    for (const SettingRow &row : xaps_setting_table) {
        std::optional<std::string> value = lookup(row.name);
        const std::string_view text =
            value && !value->empty() ? std::string_view(*value) : row.default_value;
        if (!text.empty()) {
            read_setting(row, text, settings);
        }
    }
    // APNs answers any other apns-priority 400 BadPriority: not one push
    // would go out.
    if (settings.apns_priority && *settings.apns_priority != 10 && *settings.apns_priority != 5 &&
        *settings.apns_priority != 1) {
        throw Error(ErrorKind::config, "xaps_apns_priority: '" +
                                           std::to_string(*settings.apns_priority) +
                                           "' is not 10, 5 or 1, the priorities APNs accepts");
    }
    if (!settings.apns_cert_file.empty() && settings.apns_key_file.empty()) {
        settings.apns_key_file = settings.apns_cert_file; // a PEM file holding both
    }
    // These are meant to be read from a root-only file with Dovecot's
    // `key = <file` syntax, which keeps the file's last line break: one
    // written with echo or an editor must work too.
    for (std::string *secret : {&settings.apns_p12_password, &settings.apple_password_hash}) {
        if (secret->ends_with('\n')) {
            secret->pop_back();
            if (secret->ends_with('\r')) {
                secret->pop_back();
            }
        }
    }
    return settings;
}

XapsSettings default_xaps_settings() {
    return read_xaps_settings(
        [](std::string_view) -> std::optional<std::string> { return std::nullopt; });
}

std::string resolve_socket_path(std::string_view path, std::string_view base_dir) {
    if (!path.empty() && path.front() == '/') {
        return std::string(path);
    }
    return std::string(base_dir) + "/" + std::string(path);
}

} // namespace xaps
