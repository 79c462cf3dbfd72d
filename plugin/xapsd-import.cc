#include "xapsd-import.h"

#include "registration-rules.h"
#include "xaps-error.h"

#include <json/json.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>

namespace xaps::plugin {

namespace {

[[noreturn]] void refuse(const std::string &message) {
    throw Error(ErrorKind::invalid_input, message);
}

// Why an entry is skipped.
class Skip {
public:
    explicit Skip(std::string reason) : reason_(std::move(reason)) {}
    const std::string &reason() const { return reason_; }

private:
    std::string reason_;
};

// The value a registration rule stores; a breach skips the entry, worded
// for the admin reading doveadm's report about the file.
std::string take(Checked<std::string> checked, std::size_t max_length, const char *what) {
    if (const auto *breach = std::get_if<RuleBreach>(&checked)) {
        switch (breach->problem) {
        case RuleBreach::Problem::missing:
            throw Skip(std::string(what) + " is empty");
        case RuleBreach::Problem::too_long:
            throw Skip(std::string(what) + " is longer than " + std::to_string(max_length) +
                       " bytes");
        case RuleBreach::Problem::control_character:
            throw Skip(std::string(what) + " contains control characters");
        case RuleBreach::Problem::not_utf8:
            throw Skip(std::string(what) + " is not valid UTF-8");
        default:
            throw Skip(breach->reason);
        }
    }
    return std::get<std::string>(std::move(checked));
}

std::string device_token(const Json::Value &account) {
    const Json::Value &value = account["DeviceToken"];
    if (!value.isString()) {
        throw Skip("DeviceToken is missing or not a string");
    }
    auto token = check_device_token(value.asString());
    if (std::holds_alternative<RuleBreach>(token)) {
        throw Skip("DeviceToken is not an even number of hex digits (at most " +
                   std::to_string(limits::max_device_token_length) + ")");
    }
    return std::get<std::string>(std::move(token));
}

std::vector<std::string> mailboxes(const Json::Value &account, const XapsdImportOptions &options) {
    const Json::Value &value = account["Mailboxes"];
    if (value.isNull() || (value.isArray() && value.empty())) {
        // xapsd never pushed to such an entry: it matched no mailbox.
        throw Skip("no mailboxes");
    }
    if (!value.isArray()) {
        throw Skip("Mailboxes is not a list");
    }
    if (check_mailbox_count(value.size())) {
        throw Skip("more than " + std::to_string(limits::max_mailboxes) + " mailboxes");
    }
    std::vector<std::string> names;
    for (const Json::Value &item : value) {
        if (!item.isString()) {
            throw Skip("a mailbox name is not a string");
        }
        std::string name = item.asString();
        if (options.decode_mailbox_name) {
            if (auto utf8 = options.decode_mailbox_name(name)) {
                name = std::move(*utf8);
            }
        }
        name = take(check_mailbox_name(name), limits::max_mailbox_name_length, "a mailbox name");
        if (std::find(names.begin(), names.end(), name) == names.end()) {
            names.push_back(std::move(name));
        }
    }
    return names;
}

std::int64_t registration_time(const Json::Value &account, const XapsdImportOptions &options) {
    const Json::Value &value = account["RegistrationTime"];
    if (value.isNull()) {
        return options.now;
    }
    if (!value.isString()) {
        throw Skip("RegistrationTime is not a string");
    }
    std::optional<std::int64_t> time = parse_rfc3339_time(value.asString());
    if (!time) {
        throw Skip("RegistrationTime is not an RFC 3339 time");
    }
    // Go's zero time (year 1) means "unknown"; a time after now is a wrong clock.
    if (*time <= 0 || *time > options.now) {
        return options.now;
    }
    if (*time < options.expired_before) {
        throw Skip("expired: last registered at " + value.asString());
    }
    return *time;
}

Registration registration(const std::string &user, const std::string &account_id,
                          const Json::Value &account, const XapsdImportOptions &options) {
    if (!account.isObject()) {
        throw Skip("the account is not an object");
    }
    Registration reg;
    reg.account_id =
        take(check_account_id(account_id), limits::max_account_id_length, "the account id");
    reg.user = user;
    reg.device_token = device_token(account);
    reg.subtopic = xapsd_subtopic;
    reg.aps_version = 2;
    reg.mailboxes = mailboxes(account, options);
    reg.registered_at = registration_time(account, options);
    reg.last_seen = reg.registered_at;
    return reg;
}

void parse_user(const std::string &user, const Json::Value &value,
                const XapsdImportOptions &options, XapsdDatabase &database) {
    try {
        if (!value.isObject()) {
            throw Skip("the user is not an object");
        }
        take(check_user(user), limits::max_user_length, "the user name");
        const Json::Value &accounts = value["Accounts"];
        if (accounts.isNull()) {
            return; // Go writes a nil map as null: no registrations
        }
        if (!accounts.isObject()) {
            throw Skip("Accounts is not an object");
        }
        for (auto it = accounts.begin(); it != accounts.end(); ++it) {
            std::string account_id = it.name();
            try {
                database.registrations.push_back(registration(user, account_id, *it, options));
            } catch (const Skip &skip) {
                database.skipped.push_back({user, account_id, skip.reason()});
            }
        }
    } catch (const Skip &skip) {
        database.skipped.push_back({user, {}, skip.reason()});
    }
}

// Reads up to max_xapsd_file_size + 1 bytes: one more than allowed tells
// that the file is too big even where its size is unknown (a pipe).
std::string read_bounded(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw Error(ErrorKind::not_found, "cannot open " + path + ": " + std::strerror(errno));
    }
    std::string text;
    std::string chunk(64 * 1024, '\0');
    while (in && text.size() <= max_xapsd_file_size) {
        in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
        text.append(chunk.data(), static_cast<std::size_t>(in.gcount()));
    }
    if (in.bad()) {
        throw Error(ErrorKind::not_found, "cannot read " + path);
    }
    if (text.size() > max_xapsd_file_size) {
        refuse(path + " is larger than " + std::to_string(max_xapsd_file_size / (1024 * 1024)) +
               " MiB: not an xapsd database");
    }
    return text;
}

// Parses exactly `digits` decimal digits at text[pos].
std::optional<int> fixed_number(std::string_view text, std::size_t pos, std::size_t digits) {
    if (pos + digits > text.size()) {
        return std::nullopt;
    }
    int value = 0;
    for (std::size_t i = pos; i < pos + digits; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return std::nullopt;
        }
        value = value * 10 + (text[i] - '0');
    }
    return value;
}

} // namespace

std::optional<std::int64_t> parse_rfc3339_time(std::string_view text) {
    // 2006-01-02T15:04:05[.fraction](Z|+hh:mm|-hh:mm)
    auto year = fixed_number(text, 0, 4);
    auto month = fixed_number(text, 5, 2);
    auto day = fixed_number(text, 8, 2);
    auto hour = fixed_number(text, 11, 2);
    auto minute = fixed_number(text, 14, 2);
    auto second = fixed_number(text, 17, 2);
    if (!year || !month || !day || !hour || !minute || !second || text[4] != '-' ||
        text[7] != '-' || (text[10] != 'T' && text[10] != 't') || text[13] != ':' ||
        text[16] != ':') {
        return std::nullopt;
    }
    std::size_t pos = 19;
    if (pos < text.size() && text[pos] == '.') {
        std::size_t digits_start = ++pos;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
            pos++;
        }
        if (pos == digits_start) {
            return std::nullopt;
        }
    }
    int offset_seconds = 0;
    if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
        pos++;
    } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
        auto offset_hours = fixed_number(text, pos + 1, 2);
        auto offset_minutes = fixed_number(text, pos + 4, 2);
        if (!offset_hours || !offset_minutes || text[pos + 3] != ':' || *offset_hours > 23 ||
            *offset_minutes > 59) {
            return std::nullopt;
        }
        offset_seconds = (*offset_hours * 60 + *offset_minutes) * 60;
        if (text[pos] == '-') {
            offset_seconds = -offset_seconds;
        }
        pos += 6;
    } else {
        return std::nullopt;
    }
    if (pos != text.size()) {
        return std::nullopt;
    }

    using namespace std::chrono;
    year_month_day date{std::chrono::year(*year), std::chrono::month(static_cast<unsigned>(*month)),
                        std::chrono::day(static_cast<unsigned>(*day))};
    // Go accepts no leap second in time strings either.
    if (!date.ok() || *hour > 23 || *minute > 59 || *second > 59) {
        return std::nullopt;
    }
    std::int64_t days = sys_days(date).time_since_epoch().count();
    return days * 86400 + *hour * 3600 + *minute * 60 + *second - offset_seconds;
}

XapsdDatabase parse_xapsd_database(std::string_view json_text, const XapsdImportOptions &options) {
    Json::CharReaderBuilder builder;
    Json::CharReaderBuilder::strictMode(&builder.settings_);
    std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value root;
    std::string errors;
    bool parsed = false;
    try {
        parsed =
            reader->parse(json_text.data(), json_text.data() + json_text.size(), &root, &errors);
    } catch (const std::exception &e) {
        // jsoncpp throws (std::runtime_error) instead of reporting nesting
        // deeper than its stack limit: found by fuzz-xapsd-import.
        errors = e.what();
    }
    if (!parsed) {
        while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) {
            errors.pop_back();
        }
        refuse("not valid JSON: " + errors.substr(0, 200));
    }
    if (!root.isObject() || !root.isMember("Users")) {
        refuse("not an xapsd database: no \"Users\" object at the top");
    }
    const Json::Value &users = root["Users"];
    XapsdDatabase database;
    if (users.isNull()) {
        return database;
    }
    if (!users.isObject()) {
        refuse("not an xapsd database: \"Users\" is not an object");
    }
    for (auto it = users.begin(); it != users.end(); ++it) {
        parse_user(it.name(), *it, options, database);
    }
    return database;
}

XapsdDatabase read_xapsd_database(const std::string &path, const XapsdImportOptions &options) {
    std::string text = read_bounded(path);
    try {
        return parse_xapsd_database(text, options);
    } catch (const Error &e) {
        throw Error(e.kind(), path + ": " + e.what());
    }
}

} // namespace xaps::plugin
