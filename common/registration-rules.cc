#include "registration-rules.h"

#include <algorithm>

namespace xaps {

namespace {

char lower_ascii_char(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool is_hex_digit(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

RuleBreach breach(RuleBreach::Problem problem, std::string reason) {
    return {problem, std::move(reason)};
}

using Problem = RuleBreach::Problem;

} // namespace

std::string lower_ascii(std::string_view text) {
    std::string lower(text);
    std::ranges::transform(lower, lower.begin(), lower_ascii_char);
    return lower;
}

bool equals_ignoring_ascii_case(std::string_view a, std::string_view b) {
    return std::ranges::equal(
        a, b, [](char x, char y) { return lower_ascii_char(x) == lower_ascii_char(y); });
}

bool has_control_character(std::string_view text) {
    return std::ranges::any_of(text, [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

bool has_c1_control_character(std::string_view utf8) {
    // In UTF-8, U+0080 to U+009F are C2 80 to C2 9F; C2 is never a
    // continuation byte, so a byte search finds exactly those characters.
    for (std::size_t i = 0; i + 1 < utf8.size(); i++) {
        auto byte = static_cast<unsigned char>(utf8[i]);
        auto next = static_cast<unsigned char>(utf8[i + 1]);
        if (byte == 0xc2 && next >= 0x80 && next <= 0x9f) {
            return true;
        }
    }
    return false;
}

bool is_valid_utf8(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        auto lead = static_cast<unsigned char>(text[i]);
        if (lead < 0x80) {
            i++;
            continue;
        }
        std::size_t length = 0;
        char32_t code = 0;
        char32_t smallest = 0;
        if ((lead & 0xe0) == 0xc0) {
            length = 2, code = lead & 0x1f, smallest = 0x80;
        } else if ((lead & 0xf0) == 0xe0) {
            length = 3, code = lead & 0x0f, smallest = 0x800;
        } else if ((lead & 0xf8) == 0xf0) {
            length = 4, code = lead & 0x07, smallest = 0x10000;
        } else {
            return false;
        }
        if (text.size() - i < length) {
            return false;
        }
        for (std::size_t k = 1; k < length; k++) {
            auto next = static_cast<unsigned char>(text[i + k]);
            if ((next & 0xc0) != 0x80) {
                return false;
            }
            code = (code << 6) | (next & 0x3f);
        }
        if (code < smallest || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
            return false;
        }
        i += length;
    }
    return true;
}

Checked<std::string> check_user(std::string_view user) {
    if (user.empty()) {
        return breach(Problem::missing, "Missing user name.");
    }
    if (user.size() > limits::max_user_length) {
        return breach(Problem::too_long, "User name is too long.");
    }
    if (has_control_character(user)) {
        return breach(Problem::control_character, "User name contains control characters.");
    }
    return std::string(user);
}

Checked<std::string> check_account_id(std::string_view account_id) {
    if (account_id.empty()) {
        return breach(Problem::missing, "Missing aps-account-id.");
    }
    if (account_id.size() > limits::max_account_id_length) {
        return breach(Problem::too_long, "aps-account-id is too long.");
    }
    if (has_control_character(account_id)) {
        return breach(Problem::control_character, "aps-account-id contains control characters.");
    }
    if (!is_valid_utf8(account_id)) {
        return breach(Problem::not_utf8, "aps-account-id is not valid UTF-8.");
    }
    return std::string(account_id);
}

Checked<std::string> check_device_token(std::string_view token) {
    if (token.empty()) {
        return breach(Problem::missing, "Missing aps-device-token.");
    }
    if (token.size() > limits::max_device_token_length) {
        return breach(Problem::too_long, "aps-device-token is too long.");
    }
    if (!std::ranges::all_of(token, is_hex_digit)) {
        return breach(Problem::not_hex, "aps-device-token must be hexadecimal.");
    }
    if (token.size() % 2 != 0) {
        return breach(Problem::odd_length,
                      "aps-device-token must have an even number of hex digits.");
    }
    return lower_ascii(token);
}

Checked<std::string> check_subtopic(std::string_view subtopic,
                                    std::span<const std::string> accepted) {
    if (subtopic.empty()) {
        return breach(Problem::missing, "Missing aps-subtopic.");
    }
    if (std::ranges::find(accepted, subtopic) == accepted.end()) {
        return breach(Problem::not_accepted, "Unsupported aps-subtopic.");
    }
    return std::string(subtopic);
}

Checked<unsigned> check_aps_version(std::string_view text) {
    if (text == "1") {
        return 1U;
    }
    if (text == "2") {
        return 2U;
    }
    return breach(Problem::not_accepted, "Unsupported aps-version.");
}

Checked<unsigned> check_aps_version(unsigned version) {
    if (version == 1 || version == 2) {
        return version;
    }
    return breach(Problem::not_accepted, "Unsupported aps-version.");
}

std::optional<RuleBreach> check_mailbox_count(std::size_t count) {
    if (count > limits::max_mailboxes) {
        return breach(Problem::too_many, "Too many mailboxes.");
    }
    return std::nullopt;
}

Checked<std::string> check_mailbox_name(std::string_view name) {
    if (name.empty()) {
        return breach(Problem::missing, "Empty mailbox name.");
    }
    if (name.size() > limits::max_mailbox_name_length) {
        return breach(Problem::too_long, "Mailbox name is too long.");
    }
    if (has_control_character(name)) {
        return breach(Problem::control_character, "Mailbox name contains control characters.");
    }
    if (!is_valid_utf8(name)) {
        return breach(Problem::not_utf8, "Mailbox name is not valid UTF-8.");
    }
    if (has_c1_control_character(name)) {
        return breach(Problem::control_character, "Mailbox name contains control characters.");
    }
    return canonical_mailbox_name(std::string(name));
}

std::string canonical_mailbox_name(std::string name) {
    constexpr std::string_view inbox = "INBOX";
    if (equals_ignoring_ascii_case(name, inbox)) {
        return std::string(inbox);
    }
    return name;
}

} // namespace xaps
