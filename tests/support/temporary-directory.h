// A private directory (under /tmp unless told otherwise), removed with
// everything in it when the object goes away, unless XAPS_KEEP_TEST_DIRS=1
// asks to keep it for debugging.
#pragma once

#include <string>

namespace xaps::test {

class TemporaryDirectory {
public:
    // Creates <base>/<prefix>XXXXXX, mode 0755 so that unprivileged Dovecot
    // processes can reach what the test puts inside.
    explicit TemporaryDirectory(const std::string &prefix = "xaps-test-",
                                const std::string &base = "/tmp");
    ~TemporaryDirectory();
    TemporaryDirectory(const TemporaryDirectory &) = delete;
    TemporaryDirectory &operator=(const TemporaryDirectory &) = delete;

    const std::string &path() const { return path_; }
    // True when XAPS_KEEP_TEST_DIRS=1 is set.
    static bool keep_requested();
    // $TMPDIR, else /tmp: a real file system, where fsync costs what it costs.
    static std::string disk_base();
    // /dev/shm when there is one: for tests of logic that commits often, where
    // an fsync on a busy disk would cost milliseconds each.
    static std::string memory_base();

private:
    std::string path_;
};

} // namespace xaps::test
