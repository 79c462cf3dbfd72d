// Owning handles for libpq's connection and result objects, each freed
// exactly once with its own libpq function.
#pragma once

#include <libpq-fe.h>

#include <memory>

namespace xaps::pgsql {

struct ConnectionDeleter {
    void operator()(PGconn *connection) const noexcept { PQfinish(connection); }
};
using Connection = std::unique_ptr<PGconn, ConnectionDeleter>;

struct ResultDeleter {
    void operator()(PGresult *result) const noexcept { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

struct NotifyDeleter {
    void operator()(PGnotify *notify) const noexcept { PQfreemem(notify); }
};
using Notify = std::unique_ptr<PGnotify, NotifyDeleter>;

} // namespace xaps::pgsql
