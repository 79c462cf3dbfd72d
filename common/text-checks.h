// Checks on client-supplied text that both the IMAP parser and the worker
// apply (the worker again, against any peer). Hand-written because the core
// has no Dovecot (uni_utf8_str_is_valid) and none of our other libraries
// exposes a UTF-8 validator.
#pragma once

#include <string_view>

namespace xaps {

// Any C0 control character or DEL.
bool has_control_character(std::string_view text);
// Well-formed UTF-8 (RFC 3629): no overlong forms, surrogates or code points
// past U+10FFFF. Account ids go into the JSON body Apple receives.
bool is_valid_utf8(std::string_view text);

} // namespace xaps
