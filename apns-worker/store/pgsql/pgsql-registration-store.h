// The shared registration store on PostgreSQL (libpq). The module
// xaps-store-pgsql.so hands it out through xaps_open_shared_store(); tests
// link it directly.
#pragma once

#include "shared-registration-store.h"

#include <memory>

namespace xaps {

// Opens the store; connects, and creates the tables when missing, on first
// use. Throws Error(config) for a database written by a newer schema, or a
// connection string libpq cannot parse. An unreachable database is no error
// here: the store's calls fail with Error(unavailable) until it answers.
std::unique_ptr<SharedRegistrationStore> open_pgsql_store(const SharedStoreOptions &options);

} // namespace xaps
