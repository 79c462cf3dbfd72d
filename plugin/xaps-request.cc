#include "xaps-request.h"

#include "registration.h"
#include "text-checks.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <string_view>

namespace xaps::plugin {

namespace {

constexpr std::string_view inbox = "INBOX";

bool equals_ignore_case(std::string_view a, std::string_view b) {
    return std::ranges::equal(a, b, [](char x, char y) {
        auto lower = [](char c) {
            return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
        };
        return lower(x) == lower(y);
    });
}

int hex_digit_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

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
        if (equals_ignore_case(text, known.name)) {
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

std::optional<RequestError> validate_device_token(const std::string &token, std::string &lowered) {
    if (token.empty()) {
        return no("Missing aps-device-token.");
    }
    if (token.size() > limits::max_device_token_length) {
        return no("aps-device-token is too long.");
    }
    if (!std::ranges::all_of(token, [](char c) { return hex_digit_value(c) >= 0; })) {
        return no("aps-device-token must be hexadecimal.");
    }
    if (token.size() % 2 != 0) {
        return no("aps-device-token must have an even number of hex digits.");
    }
    lowered.clear();
    lowered.reserve(token.size());
    for (char c : token) {
        lowered.push_back("0123456789abcdef"[hex_digit_value(c)]);
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
    if (list->items.size() > limits::max_mailboxes) {
        return no("Too many mailboxes.");
    }
    for (const RequestArg &item : list->items) {
        const std::string &name = item.text;
        if (name.empty()) {
            return no("Empty mailbox name.");
        }
        if (name.size() > limits::max_mailbox_name_length) {
            return no("Mailbox name is too long.");
        }
        if (has_control_character(name)) {
            return no("Mailbox name contains control characters.");
        }
        std::optional<std::string> utf8 =
            policy.decode_mailbox_name ? policy.decode_mailbox_name(name) : std::optional(name);
        if (!utf8 || utf8->empty()) {
            return no("Mailbox name is not valid modified UTF-7.");
        }
        // INBOX is case-insensitive (RFC 3501); events always call it "INBOX".
        if (equals_ignore_case(*utf8, inbox)) {
            *utf8 = inbox;
        }
        bool duplicate = std::ranges::any_of(
            mailboxes, [&](const RequestMailbox &known) { return known.utf8 == *utf8; });
        if (!duplicate) {
            mailboxes.push_back({name, std::move(*utf8)});
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
    if (*version == "1") {
        request.aps_version = 1;
    } else if (*version == "2") {
        request.aps_version = 2;
    } else {
        return no("Unsupported aps-version.");
    }

    const std::string *account_id = raw.text(Key::account_id);
    if (account_id == nullptr || account_id->empty()) {
        return no("Missing aps-account-id.");
    }
    if (account_id->size() > limits::max_account_id_length) {
        return no("aps-account-id is too long.");
    }
    if (has_control_character(*account_id)) {
        return no("aps-account-id contains control characters.");
    }
    if (!is_valid_utf8(*account_id)) {
        return no("aps-account-id is not valid UTF-8.");
    }
    request.account_id = *account_id;

    const std::string *token = raw.text(Key::device_token);
    if (auto error = validate_device_token(token == nullptr ? std::string() : *token,
                                           request.device_token)) {
        return *error;
    }

    const std::string *subtopic = raw.text(Key::subtopic);
    if (subtopic == nullptr || subtopic->empty()) {
        return no("Missing aps-subtopic.");
    }
    if (std::ranges::find(policy.subtopics, *subtopic) == policy.subtopics.end()) {
        return no("Unsupported aps-subtopic.");
    }
    request.subtopic = *subtopic;

    // Version 1 pushes the INBOX only, whatever list came along.
    const RequestArg *list = request.aps_version == 1 ? nullptr : raw[Key::mailboxes];
    if (auto error = collect_mailboxes(list, policy, request.mailboxes)) {
        return *error;
    }
    return request;
}

} // namespace xaps::plugin
