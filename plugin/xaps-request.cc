#include "xaps-request.h"

#include "registration-rules.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <string_view>

namespace xaps::plugin {

namespace {

constexpr std::string_view inbox = "INBOX";

enum class Key { aps_version, account_id, device_token, subtopic, mailboxes, count };

struct KeyName {
    Key key;
    std::string_view name;
};

constexpr std::array<KeyName, static_cast<std::size_t>(Key::count)> known_keys{{
    {Key::aps_version, "aps-version"},
    {Key::account_id, "aps-account-id"},
    {Key::device_token, "aps-device-token"},
    {Key::subtopic, "aps-subtopic"},
    {Key::mailboxes, "mailboxes"},
}};

std::string_view key_name(Key key) {
    return known_keys[static_cast<std::size_t>(key)].name;
}

std::optional<Key> find_key(std::string_view text) {
    for (const auto &known : known_keys) {
        if (equals_ignoring_ascii_case(text, known.name)) {
            return known.key;
        }
    }
    return std::nullopt;
}

RequestError bad(std::string message) {
    return {Rejection::bad, std::move(message)};
}
RequestError no(std::string message) {
    return {Rejection::no, std::move(message)};
}

// The NO reply for a value that breaks its registration rule.
template <typename Value> std::optional<RequestError> refusal(const Checked<Value> &checked) {
    if (const auto *breach = std::get_if<RuleBreach>(&checked)) {
        return no(breach->reason);
    }
    return std::nullopt;
}

std::string_view text_or_empty(const std::string *text) {
    return text == nullptr ? std::string_view() : std::string_view(*text);
}

// The known pairs after the syntax check: values still unvalidated.
struct RawRequest {
    std::array<const RequestArg *, static_cast<std::size_t>(Key::count)> values{};

    const RequestArg *&operator[](Key key) { return values[static_cast<std::size_t>(key)]; }
    const std::string *text(Key key) const {
        const RequestArg *arg = values[static_cast<std::size_t>(key)];
        return arg == nullptr ? nullptr : &arg->text;
    }
};

std::optional<RequestError> collect_pairs(std::span<const RequestArg> args, RawRequest &raw) {
    if (args.size() % 2 != 0) {
        return bad("Arguments must be key/value pairs.");
    }
    for (std::size_t i = 0; i < args.size(); i += 2) {
        const RequestArg &key_arg = args[i];
        const RequestArg &value = args[i + 1];
        if (key_arg.kind != RequestArg::Kind::string) {
            return bad("Argument keys must be strings.");
        }
        std::optional<Key> key = find_key(key_arg.text);
        if (!key) {
            continue; // newer iOS versions add pairs (e.g. "sender"): ignore them
        }
        if (raw[*key] != nullptr) {
            return bad(std::string(key_name(*key)) + " is given more than once.");
        }
        if (*key == Key::mailboxes) {
            if (value.kind != RequestArg::Kind::list) {
                return bad("mailboxes must be a list.");
            }
            bool all_strings = std::ranges::all_of(value.items, [](const RequestArg &item) {
                return item.kind == RequestArg::Kind::string;
            });
            if (!all_strings) {
                return bad("Mailbox names must be strings.");
            }
        } else if (value.kind != RequestArg::Kind::string) {
            return bad(std::string(key_name(*key)) + " must be a string.");
        }
        raw[*key] = &value;
    }
    return std::nullopt;
}

std::optional<RequestError> collect_mailboxes(const RequestArg *list, const RequestPolicy &policy,
                                              std::vector<RequestMailbox> &mailboxes) {
    if (list == nullptr) {
        // No list at all: the INBOX, which every client means by "push me".
        mailboxes.push_back({std::string(inbox), std::string(inbox)});
        return std::nullopt;
    }
    if (auto breach = check_mailbox_count(list->items.size())) {
        return no(std::move(breach->reason));
    }
    for (const RequestArg &item : list->items) {
        // Checked as sent, since the tagged reply echoes it.
        const std::string &name = item.text;
        if (auto error = refusal(check_mailbox_name(name))) {
            return error;
        }
        std::optional<std::string> utf8 =
            policy.decode_mailbox_name ? policy.decode_mailbox_name(name) : std::optional(name);
        if (!utf8) {
            return no("Mailbox name is not valid modified UTF-7.");
        }
        // Decoding brings what the name as sent cannot hold: "&AAE-" is
        // U+0001, "&AIU-" is the C1 control U+0085.
        auto decoded = check_mailbox_name(*utf8);
        if (auto error = refusal(decoded)) {
            return error;
        }
        std::string registered = std::get<std::string>(std::move(decoded));
        bool duplicate = std::ranges::any_of(
            mailboxes, [&](const RequestMailbox &known) { return known.utf8 == registered; });
        if (!duplicate) {
            mailboxes.push_back({name, std::move(registered)});
        }
    }
    return std::nullopt;
}

} // namespace

ParsedRequest parse_aps_request(std::span<const RequestArg> args, const RequestPolicy &policy) {
    RawRequest raw;
    if (auto error = collect_pairs(args, raw)) {
        return *error;
    }

    ApsRequest request;
    const std::string *version = raw.text(Key::aps_version);
    if (version == nullptr) {
        return no("Missing aps-version.");
    }
    auto aps_version = check_aps_version(*version);
    if (auto error = refusal(aps_version)) {
        return *error;
    }
    request.aps_version = std::get<unsigned>(aps_version);

    auto account_id = check_account_id(text_or_empty(raw.text(Key::account_id)));
    if (auto error = refusal(account_id)) {
        return *error;
    }
    request.account_id = std::get<std::string>(std::move(account_id));

    auto token = check_device_token(text_or_empty(raw.text(Key::device_token)));
    if (auto error = refusal(token)) {
        return *error;
    }
    request.device_token = std::get<std::string>(std::move(token));

    auto subtopic = check_subtopic(text_or_empty(raw.text(Key::subtopic)), policy.subtopics);
    if (auto error = refusal(subtopic)) {
        return *error;
    }
    request.subtopic = std::get<std::string>(std::move(subtopic));

    // Version 1 pushes the INBOX only, whatever list came along.
    const RequestArg *list = request.aps_version == 1 ? nullptr : raw[Key::mailboxes];
    if (auto error = collect_mailboxes(list, policy, request.mailboxes)) {
        return *error;
    }
    return request;
}

} // namespace xaps::plugin
