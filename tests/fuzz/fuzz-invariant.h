// Invariant checks inside the fuzz targets. Under libFuzzer a broken invariant
// must crash so that the input is kept (fuzz-invariant-abort.cc); in the
// regression replay under GoogleTest it throws so that the test names the
// file and goes on with the next one (test-fuzz-regressions.cc).
#pragma once

namespace xaps::fuzz {

[[noreturn]] void invariant_failed(const char *file, int line, const char *condition);

} // namespace xaps::fuzz

// A macro so that the report names the condition, file and line.
#define XAPS_FUZZ_CHECK(condition)                                                                 \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            ::xaps::fuzz::invariant_failed(__FILE__, __LINE__, #condition);                        \
        }                                                                                          \
    } while (false)
