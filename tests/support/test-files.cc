#include "test-files.h"

#include "xaps-error.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace xaps::test {

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file(const std::string &path, const std::string &content, mode_t mode) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out || ::chmod(path.c_str(), mode) < 0) {
        throw Error(ErrorKind::internal, "cannot write " + path);
    }
}

void make_directory(const std::string &path, mode_t mode, const SystemUser *owner) {
    std::filesystem::create_directories(path);
    if (::chmod(path.c_str(), mode) < 0 ||
        (owner != nullptr && ::chown(path.c_str(), owner->uid, owner->gid) < 0)) {
        throw Error(ErrorKind::internal, "cannot set up " + path + ": " + std::strerror(errno));
    }
}

} // namespace xaps::test
