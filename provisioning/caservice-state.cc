#include "caservice-state.h"

#include "xaps-error.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace xaps::caservice {
namespace {

constexpr std::size_t max_state_file_size = 1024 * 1024;

class Fd {
public:
    explicit Fd(int fd) noexcept : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    int get() const noexcept { return fd_; }
    // close() reports late write errors (NFS): callers that wrote check it.
    int close() noexcept {
        int result = ::close(fd_);
        fd_ = -1;
        return result;
    }

private:
    int fd_;
};

[[noreturn]] void fail(const std::string &path, const char *what, int error) {
    throw Error(ErrorKind::config, path + ": " + what + ": " + std::strerror(error));
}

// The content, or nullopt when the file does not exist.
std::optional<std::string> read_state_file(const std::string &path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
        if (errno == ENOENT) {
            return std::nullopt;
        }
        fail(path, "open", errno);
    }
    std::string content;
    char buffer[8192];
    for (;;) {
        ssize_t got = ::read(fd.get(), buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            fail(path, "read", errno);
        }
        if (got == 0) {
            return content;
        }
        content.append(buffer, static_cast<std::size_t>(got));
        if (content.size() > max_state_file_size) {
            throw Error(ErrorKind::config, path + ": too large to be a key or certificate");
        }
    }
}

} // namespace

StateDirectory::StateDirectory(const std::string &state_dir) : path_(state_dir + "/caservice") {
    struct stat parent {};
    if (::stat(state_dir.c_str(), &parent) != 0 || !S_ISDIR(parent.st_mode)) {
        throw Error(ErrorKind::config,
                    "xaps_db_path " + state_dir +
                        ": not a directory; it holds the certificates Apple's certificate "
                        "service issued");
    }
    if (::mkdir(path_.c_str(), 0700) != 0 && errno != EEXIST) {
        fail(path_, "mkdir", errno);
    }
    struct stat own {};
    if (::lstat(path_.c_str(), &own) != 0) {
        fail(path_, "stat", errno);
    }
    if (!S_ISDIR(own.st_mode)) {
        throw Error(ErrorKind::config, path_ + ": not a directory");
    }
}

std::string StateDirectory::key_path(const ServiceSpec &service) const {
    return path_ + "/" + std::string(service.short_name) + ".key";
}

std::string StateDirectory::certificate_path(const ServiceSpec &service) const {
    return path_ + "/" + std::string(service.short_name) + ".pem";
}

std::optional<std::vector<StoredCredential>>
StateDirectory::load(const std::vector<ServiceSpec> &services, std::string &problem_r) const {
    problem_r.clear();
    std::vector<StoredCredential> stored;
    bool any_file = false;
    std::string problem;
    for (const ServiceSpec &service : services) {
        std::optional<std::string> key_pem = read_state_file(key_path(service));
        std::optional<std::string> cert_pem = read_state_file(certificate_path(service));
        any_file = any_file || key_pem || cert_pem;
        if (!problem.empty()) {
            continue;
        }
        if (!key_pem || !cert_pem) {
            problem = (key_pem ? certificate_path(service) : key_path(service)) + " is missing";
            continue;
        }
        StoredCredential credential;
        credential.key = private_key_from_pem(*key_pem);
        credential.certificate = certificate_from_pem(*cert_pem);
        if (!credential.key || !credential.certificate) {
            problem = (credential.key ? certificate_path(service) : key_path(service)) +
                      " is not a PEM " + (credential.key ? "certificate" : "private key");
        } else if (!certificate_matches_key(credential.certificate.get(), credential.key.get())) {
            problem = certificate_path(service) + " does not belong to " + key_path(service);
        }
        stored.push_back(std::move(credential));
    }
    if (!problem.empty()) {
        if (any_file) {
            problem_r = problem;
        }
        return std::nullopt;
    }
    return stored;
}

void StateDirectory::write_key(const ServiceSpec &service, EVP_PKEY *key) const {
    write_private_file(key_path(service), private_key_to_pem(key));
}

void StateDirectory::write_certificate(const ServiceSpec &service, X509 *certificate) const {
    write_private_file(certificate_path(service), certificate_to_pem(certificate));
}

void StateDirectory::write_private_file(const std::string &path, const std::string &content) const {
    const std::string temporary = path + ".tmp";
    ::unlink(temporary.c_str()); // left over by a crash
    Fd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) {
        fail(temporary, "open", errno);
    }
    // The umask may have taken bits away, never added: make it exactly 0600.
    if (::fchmod(fd.get(), 0600) != 0) {
        fail(temporary, "fchmod", errno);
    }
    std::size_t written = 0;
    while (written < content.size()) {
        ssize_t put = ::write(fd.get(), content.data() + written, content.size() - written);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put < 0) {
            int error = errno;
            ::unlink(temporary.c_str());
            fail(temporary, "write", error);
        }
        written += static_cast<std::size_t>(put);
    }
    if (::fsync(fd.get()) != 0 || fd.close() != 0) {
        int error = errno;
        ::unlink(temporary.c_str());
        fail(temporary, "fsync", error);
    }
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        int error = errno;
        ::unlink(temporary.c_str());
        fail(path, "rename", error);
    }
    Fd directory(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (directory.get() >= 0) {
        ::fsync(directory.get()); // the rename itself survives a crash
    }
}

} // namespace xaps::caservice
