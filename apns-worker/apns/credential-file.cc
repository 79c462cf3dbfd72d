#include "credential-file.h"

#include "xaps-error.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

namespace xaps {
namespace {

// Credential files are small; anything bigger is not one.
constexpr off_t max_credential_file_size = 1024 * 1024;

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0)
            ::close(fd);
    }
};

} // namespace

void credential_error(std::string_view what, const std::string &path, std::string_view problem) {
    throw Error(ErrorKind::config, std::string(what) + " " + path + ": " + std::string(problem));
}

std::string read_credential_file(std::string_view what, const std::string &path) {
    Fd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0)
        credential_error(what, path, std::string("cannot read: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(file.fd, &st) < 0)
        credential_error(what, path, std::string("cannot read: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        credential_error(what, path, "not a regular file");
    if (st.st_size > max_credential_file_size)
        credential_error(what, path, "too large to be a credential file");
    std::string content(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t done = 0;
    while (done < content.size()) {
        const ssize_t got = ::read(file.fd, content.data() + done, content.size() - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            credential_error(what, path, std::string("cannot read: ") + std::strerror(errno));
        if (got == 0)
            break;
        done += static_cast<std::size_t>(got);
    }
    content.resize(done);
    return content;
}

extern "C" int refuse_passphrase_callback(char *, int, int, void *) noexcept {
    return -1;
}

std::string openssl_error() {
    std::string message;
    while (unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof(buffer));
        message = buffer;
    }
    return message.empty() ? "unknown OpenSSL error" : message;
}

} // namespace xaps
