// Stored values as `doveadm xaps list` shows them on an admin's terminal.
//
// The worker keeps a push user name as the userdb gave it, control characters
// included, and a store written by an older version may hold them in any
// field: escaping at print time means no stored byte can move the cursor,
// retitle the terminal or hide a row. Escapes are visible: \xHH per byte.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace xaps {

// `text` with every byte that is a C0 control character or DEL, part of a C1
// control character (U+0080 to U+009F) or not part of well-formed UTF-8
// written as \xHH (lower-case hex). Everything else, backslashes included, is
// kept as it is, so ordinary names read as they are stored.
std::string printable_text(std::string_view text);

// An IMAP-style parenthesised list of quoted strings: ("INBOX" "Sent, old"
// "a\"b"). Inside the quotes '"' and '\' are backslash-escaped and the bytes
// printable_text() escapes become \xHH, so every list reads back unambiguously
// whatever its names hold. No items: "()".
std::string printable_string_list(std::span<const std::string> items);

} // namespace xaps
