#include "xaps-error.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace {

template <typename Throw> xaps::Error error_of(Throw throw_it) {
    try {
        throw_it();
    } catch (...) {
        return xaps::current_exception_as_error();
    }
    return xaps::Error(xaps::ErrorKind::internal, "nothing was thrown");
}

TEST(CurrentExceptionAsError, KeepsAnErrorAsItIs) {
    const xaps::Error error =
        error_of([] { throw xaps::Error(xaps::ErrorKind::unavailable, "database is down"); });
    EXPECT_EQ(error.kind(), xaps::ErrorKind::unavailable);
    EXPECT_STREQ(error.what(), "database is down");
}

TEST(CurrentExceptionAsError, MakesAStandardExceptionAnInternalError) {
    const xaps::Error error = error_of([] { throw std::length_error("vector too long"); });
    EXPECT_EQ(error.kind(), xaps::ErrorKind::internal);
    EXPECT_STREQ(error.what(), "vector too long");
}

TEST(CurrentExceptionAsError, MakesAnythingElseAnInternalError) {
    const xaps::Error error = error_of([] { throw 42; });
    EXPECT_EQ(error.kind(), xaps::ErrorKind::internal);
    EXPECT_STREQ(error.what(), "unknown error");
}

TEST(ErrorKindName, RoundTripsAndMapsUnknownNamesToInternal) {
    EXPECT_EQ(xaps::error_kind_name(xaps::ErrorKind::not_found), "notfound");
    EXPECT_EQ(xaps::error_kind_from_name("unavailable"), xaps::ErrorKind::unavailable);
    EXPECT_EQ(xaps::error_kind_from_name("no-such-kind"), xaps::ErrorKind::internal);
}

} // namespace
