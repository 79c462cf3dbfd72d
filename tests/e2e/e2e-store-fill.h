// A test Dovecot's registration store filled before the instance starts, as
// an earlier worker would have left it: written through the store's own API,
// then owned by the worker's user.
#pragma once

#include "dovecot-instance.h"
#include "registration-store.h"
#include "xaps-error.h"

#include <unistd.h>

#include <functional>
#include <memory>
#include <string>

namespace xaps::test::e2e {

// Throws xaps::Error when the files cannot be given to the worker's user.
inline void fill_store_before_start(const DovecotInstance &dovecot,
                                    const std::function<void(RegistrationStore &)> &fill) {
    {
        auto store_options = LmdbStoreOptions::from(default_xaps_settings());
        store_options.path = dovecot.db_path();
        store_options.max_devices_per_user = 0;
        std::unique_ptr<RegistrationStore> store = open_lmdb_store(store_options);
        fill(*store);
    }
    const SystemUser &worker_user = dovecot.worker_user();
    for (const char *file : {"/data.mdb", "/lock.mdb"}) {
        const std::string path = dovecot.db_path() + file;
        if (::chown(path.c_str(), worker_user.uid, worker_user.gid) != 0) {
            throw Error(ErrorKind::internal, "chown " + path + " failed");
        }
    }
}

} // namespace xaps::test::e2e
