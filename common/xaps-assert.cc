#include "xaps-assert.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace xaps {

namespace {
std::atomic<AssertionHandler> assertion_handler{nullptr};
} // namespace

void set_assertion_handler(AssertionHandler handler) noexcept {
    assertion_handler.store(handler);
}

void assertion_failed(const char *expression, const char *file, int line,
                      const char *function) noexcept {
    // No allocation: the heap may be what is broken.
    char message[512];
    std::snprintf(message, sizeof(message), "file %s: line %d (%s): assertion failed: (%s)", file,
                  line, function, expression);
    if (AssertionHandler handler = assertion_handler.load()) {
        handler(message);
    }
    std::fputs(message, stderr);
    std::fputc('\n', stderr);
    std::abort();
}

} // namespace xaps
