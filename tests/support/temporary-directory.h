// A private directory under /tmp, removed with everything in it when the
// object goes away, unless XAPS_KEEP_TEST_DIRS=1 asks to keep it for debugging.
#pragma once

#include <string>

namespace xaps::test {

class TemporaryDirectory {
public:
    // Creates /tmp/<prefix>XXXXXX, mode 0755 so that unprivileged Dovecot
    // processes can reach what the test puts inside.
    explicit TemporaryDirectory(const std::string &prefix = "xaps-test-");
    ~TemporaryDirectory();
    TemporaryDirectory(const TemporaryDirectory &) = delete;
    TemporaryDirectory &operator=(const TemporaryDirectory &) = delete;

    const std::string &path() const { return path_; }
    // True when XAPS_KEEP_TEST_DIRS=1 is set.
    static bool keep_requested();

private:
    std::string path_;
};

} // namespace xaps::test
