#include "test-files.h"

#include "xaps-error.h"

#include <sys/stat.h>

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

} // namespace xaps::test
