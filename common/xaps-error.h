// The one error type of the dovecot-xaps core. Core code throws it; every
// boundary with C (Dovecot, nghttp2, OpenSSL callbacks) catches it and turns it
// into Dovecot's -1 + error string, a protocol FAIL line, or an nghttp2 error.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace xaps {

enum class ErrorKind {
    invalid_input, // the caller sent something we refuse (client, protocol peer, file)
    unavailable,   // a dependency is down or busy: retrying later may work
    not_found,     // the thing asked for does not exist
    config,        // the admin's settings or credentials are wrong
    forbidden,     // the peer may not ask this (its listener does not serve the command)
    internal,      // should never happen: a bug or a broken invariant
};

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string &message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

// Stable lower-case name of a kind, as used in worker protocol FAIL replies.
std::string_view error_kind_name(ErrorKind kind) noexcept;
// Inverse of error_kind_name(); unknown names map to ErrorKind::internal.
ErrorKind error_kind_from_name(std::string_view name) noexcept;

// The exception being handled as an Error: an Error as it is, anything else
// an internal one. Call it only inside a catch block.
Error current_exception_as_error() noexcept;

} // namespace xaps
