// Reads the worker's settings from Dovecot's config (the global plugin { }
// block on 2.3, the declared xaps settings on 2.4; dovecot/dovecot-settings.cc),
// handed to the one xaps_* parser in common/xaps-settings.
#pragma once

#include "xaps-settings.h"

struct master_service;

namespace xaps {

// Must run before privileges are dropped (the config socket may be root's).
// Throws Error(config).
XapsSettings read_worker_settings(struct master_service *service);

} // namespace xaps
