// Invariants, asserted the way Dovecot asserts its own (i_assert): a broken
// invariant is a bug, and going on would corrupt state or lose a push
// silently, so the process stops, naming the expression and the place. The
// worker routes the failure to Dovecot's i_panic (a "Panic:" log line, the
// master restarts the service); elsewhere it is written to stderr and aborts.
#pragma once

#define XAPS_ASSERT(expr)                                                                          \
    ((expr) ? static_cast<void>(0)                                                                 \
            : ::xaps::assertion_failed(#expr, __FILE__, __LINE__,                                  \
                                       static_cast<const char *>(__func__)))

namespace xaps {

[[noreturn]] void assertion_failed(const char *expression, const char *file, int line,
                                   const char *function) noexcept;

// Called with the whole message; must not return.
using AssertionHandler = void (*)(const char *message);
void set_assertion_handler(AssertionHandler handler) noexcept;

} // namespace xaps
