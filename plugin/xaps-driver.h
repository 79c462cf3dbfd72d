// The push_notification driver "xaps": turns mailbox events into NOTIFY
// messages for the worker, in every process that changes mail (lmtp, lda,
// imap). Enabled with `push_notification_driver = xaps` in plugin { }.
#pragma once

namespace xaps::plugin {

void driver_register() noexcept;
void driver_unregister() noexcept;

} // namespace xaps::plugin
