// One change to the shared registration store, as each worker's local replica
// applies it (shared-registration-store.h).
#pragma once

#include "registration.h"

#include <cstdint>
#include <vector>

namespace xaps {

struct StoreChange {
    std::uint64_t revision = 0;
    // False: `registration` is now stored exactly as given (times included).
    // True: the registration keyed (user, case-insensitive; account_id;
    // device_token) is gone; only those three fields are set.
    bool removed = false;
    Registration registration;
};

struct ChangePage {
    std::vector<StoreChange> changes; // oldest first
    bool reset = false;               // drop every local copy before applying
};

} // namespace xaps
