#include "printable-text.h"

#include "registration-rules.h"

#include <cstddef>

namespace xaps {

namespace {

// The length of the well-formed UTF-8 character at text[at], or 0 if there
// is none (a stray continuation byte, a truncated or overlong form, ...).
std::size_t utf8_character_length(std::string_view text, std::size_t at) {
    auto lead = static_cast<unsigned char>(text[at]);
    std::size_t length = 0;
    if (lead < 0x80) {
        length = 1;
    } else if ((lead & 0xe0) == 0xc0) {
        length = 2;
    } else if ((lead & 0xf0) == 0xe0) {
        length = 3;
    } else if ((lead & 0xf8) == 0xf0) {
        length = 4;
    } else {
        return 0;
    }
    if (text.size() - at < length || !is_valid_utf8(text.substr(at, length))) {
        return 0;
    }
    return length;
}

void append_hex_escape(std::string &out, unsigned char byte) {
    constexpr std::string_view digits = "0123456789abcdef";
    out += "\\x";
    out += digits[byte >> 4];
    out += digits[byte & 0x0f];
}

// Appends text with the escapes printable_text() documents; inside quotes,
// '"' and '\' are escaped too.
void append_printable(std::string &out, std::string_view text, bool quoted) {
    std::size_t at = 0;
    while (at < text.size()) {
        std::size_t length = utf8_character_length(text, at);
        std::string_view character = text.substr(at, length == 0 ? 1 : length);
        if (length == 0 || has_control_character(character) ||
            has_c1_control_character(character)) {
            for (char byte : character) {
                append_hex_escape(out, static_cast<unsigned char>(byte));
            }
        } else {
            if (quoted && (character == "\"" || character == "\\")) {
                out += '\\';
            }
            out += character;
        }
        at += character.size();
    }
}

} // namespace

std::string printable_text(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    append_printable(out, text, false);
    return out;
}

std::string printable_string_list(std::span<const std::string> items) {
    std::string out = "(";
    for (const auto &item : items) {
        if (out.size() > 1) {
            out += ' ';
        }
        out += '"';
        append_printable(out, item, true);
        out += '"';
    }
    out += ')';
    return out;
}

} // namespace xaps
