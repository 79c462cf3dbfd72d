#include "temporary-directory.h"

#include "xaps-error.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sys/stat.h>
#include <vector>

namespace xaps::test {

TemporaryDirectory::TemporaryDirectory(const std::string &prefix, const std::string &base) {
    std::string pattern = base + "/" + prefix + "XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) {
        throw Error(ErrorKind::internal,
                    "mkdtemp(" + pattern + ") failed: " + std::strerror(errno));
    }
    path_ = buffer.data();
    ::chmod(path_.c_str(), 0755);
}

TemporaryDirectory::~TemporaryDirectory() {
    if (keep_requested()) {
        std::cerr << "XAPS_KEEP_TEST_DIRS=1: keeping " << path_ << "\n";
        return;
    }
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

bool TemporaryDirectory::keep_requested() {
    const char *keep = std::getenv("XAPS_KEEP_TEST_DIRS");
    return keep != nullptr && std::strcmp(keep, "1") == 0;
}

std::string TemporaryDirectory::disk_base() {
    const char *base = std::getenv("TMPDIR");
    return base != nullptr && *base != '\0' ? base : "/tmp";
}

std::string TemporaryDirectory::memory_base() {
    std::error_code error;
    return std::filesystem::is_directory("/dev/shm", error) ? "/dev/shm" : disk_base();
}

} // namespace xaps::test
