// The one "xaps" event category, shared by the mail plugin, the doveadm
// module and the worker, so that `log_debug = category=xaps` and stats
// filters see all of them alike.
#pragma once

struct event;

namespace xaps::dovecot {

enum class LogPrefix {
    // Lines start with "xaps: ": in imap, lmtp and doveadm, where the
    // process's own name says nothing about us.
    xaps,
    // No prefix of our own: the worker's service name already gives "xaps: ".
    none,
};

// A child event of `parent` (nullptr: the process) in the "xaps" category.
// The caller unrefs it.
struct event *create_event(struct event *parent, LogPrefix prefix = LogPrefix::xaps);

} // namespace xaps::dovecot
