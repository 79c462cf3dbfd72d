// The libFuzzer side of fuzz-invariant.h: a broken invariant is a crash.
#include "fuzz-invariant.h"

#include <cstdio>
#include <cstdlib>

namespace xaps::fuzz {

void invariant_failed(const char *file, int line, const char *condition) {
    std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", file, line, condition);
    std::abort();
}

} // namespace xaps::fuzz
