#include "shared-store-module.h"

#include "temporary-directory.h"
#include "xaps-error.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace {

using xaps::Error;
using xaps::ErrorKind;
using xaps::SharedStoreModule;
using xaps::test::TemporaryDirectory;

TEST(SharedStoreModule, AMissingModuleIsAConfigErrorNamingFileAndLibrary) {
    TemporaryDirectory directory;
    try {
        SharedStoreModule module(directory.path());
        FAIL() << "loaded a module that does not exist";
    } catch (const Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::config);
        const std::string message = error.what();
        EXPECT_NE(message.find(directory.path() + "/xaps-store-pgsql.so"), std::string::npos)
            << message;
        EXPECT_NE(message.find("libpq5"), std::string::npos) << message;
        EXPECT_NE(message.find("xaps_shared_store"), std::string::npos) << message;
    }
}

TEST(SharedStoreModule, AFileThatIsNoLibraryIsAConfigError) {
    TemporaryDirectory directory;
    std::ofstream(directory.path() + "/xaps-store-pgsql.so") << "not a library\n";
    try {
        SharedStoreModule module(directory.path());
        FAIL() << "loaded a text file";
    } catch (const Error &error) {
        EXPECT_EQ(error.kind(), ErrorKind::config);
    }
}

TEST(SharedStoreModule, TheExecutablesDirectoryIsAbsolute) {
    const std::string directory = xaps::executable_directory();
    ASSERT_FALSE(directory.empty());
    EXPECT_EQ(directory[0], '/');
    EXPECT_NE(directory.find("tests/unit"), std::string::npos) << directory;
}

} // namespace
