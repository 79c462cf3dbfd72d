// Reading the small files credentials live in (certificates, keys, PKCS#12,
// the .p8 token key), with errors that name the file and what is wrong, so
// that an admin reading the log knows what to fix.
#pragma once

#include <string>
#include <string_view>

namespace xaps {

// The whole file. Throws Error(config) "<what> <path>: <problem>" when it
// cannot be read, is not a regular file, or is too large to be a credential.
std::string read_credential_file(std::string_view what, const std::string &path);

// Throws Error(config) "<what> <path>: <problem>".
[[noreturn]] void credential_error(std::string_view what, const std::string &path,
                                   std::string_view problem);

// An OpenSSL pem_password_cb that refuses: without it OpenSSL would prompt
// on the terminal for the passphrase of an encrypted key.
extern "C" int refuse_passphrase_callback(char *buffer, int size, int rwflag,
                                          void *user_data) noexcept;

// The most specific message OpenSSL queued (the last one); empties the queue.
std::string openssl_error();

} // namespace xaps
