// The rules every registration store holds a registration to before storing
// it, whatever the engine: the fields that form the key are present and fit
// (LMDB's key size), none of them holds a NUL byte, and the other fields stay
// within the protocol's limits (registration.h). The worker's parsers check
// more (registration-rules.h); a store defends itself against any caller.
#pragma once

#include "registration.h"

namespace xaps {

// Throws Error(invalid_input) naming the first rule the registration breaks.
void validate_registration(const Registration &registration);

} // namespace xaps
