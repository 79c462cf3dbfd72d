// XAPPLEPUSHSERVICE: the IMAP command iOS Mail registers for push with, and
// the capability that makes it try. Only in the imap process: the same module
// is loaded by lmtp, where none of imap's symbols exist.
#pragma once

namespace xaps::plugin {

// Registers the command and the capability hook when running inside imap;
// does nothing elsewhere.
void imap_command_init() noexcept;
void imap_command_deinit() noexcept;

} // namespace xaps::plugin
