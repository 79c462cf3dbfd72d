#include "tab-escape.h"

namespace xaps {

namespace {
constexpr char escape_char = '\001';
}

std::string tab_escape(std::string_view field) {
    std::string out;
    out.reserve(field.size());
    for (char c : field) {
        switch (c) {
        case escape_char:
            out += escape_char;
            out += '1';
            break;
        case '\t':
            out += escape_char;
            out += 't';
            break;
        case '\r':
            out += escape_char;
            out += 'r';
            break;
        case '\n':
            out += escape_char;
            out += 'n';
            break;
        default:
            out += c;
        }
    }
    return out;
}

std::string tab_unescape(std::string_view field) {
    std::string out;
    out.reserve(field.size());
    for (std::size_t i = 0; i < field.size(); i++) {
        char c = field[i];
        if (c != escape_char || i + 1 == field.size()) {
            out += c;
            continue;
        }
        switch (field[++i]) {
        case '1':
            out += escape_char;
            break;
        case 't':
            out += '\t';
            break;
        case 'r':
            out += '\r';
            break;
        case 'n':
            out += '\n';
            break;
        case '0':
            out += '\0';
            break;
        default:
            // Dovecot keeps an unknown escape's character as it is.
            out += field[i];
        }
    }
    return out;
}

std::string join_line(std::span<const std::string> fields) {
    std::string line;
    for (std::size_t i = 0; i < fields.size(); i++) {
        if (i > 0) {
            line += '\t';
        }
        line += tab_escape(fields[i]);
    }
    line += '\n';
    return line;
}

std::vector<std::string> split_line(std::string_view line) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (;;) {
        std::size_t tab = line.find('\t', start);
        fields.push_back(tab_unescape(line.substr(start, tab - start)));
        if (tab == std::string_view::npos) {
            break;
        }
        start = tab + 1;
    }
    return fields;
}

} // namespace xaps
