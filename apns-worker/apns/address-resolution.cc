#include "address-resolution.h"

#include "xaps-error.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

namespace xaps {

// Owned by the loop's side and by the lookup thread, whichever ends last.
struct AddressResolution::Shared {
    int pipe_read = -1;
    int pipe_write = -1;
    std::mutex mutex; // guards the answer
    Addresses addresses;
    std::string error;

    ~Shared() {
        if (pipe_read >= 0)
            ::close(pipe_read);
        if (pipe_write >= 0)
            ::close(pipe_write);
    }
};

// Nothing here may throw out of the thread.
void AddressResolution::look_up(const std::shared_ptr<Shared> &shared, const std::string &host,
                                const std::string &service, const Lookup &lookup) noexcept {
    Addresses addresses;
    std::string error;
    try {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        addrinfo *found = nullptr;
        const int rc = lookup(host.c_str(), service.c_str(), &hints, &found);
        if (rc != 0) {
            error = "cannot resolve " + host + ": " +
                    (rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc));
        } else {
            for (const addrinfo *ai = found; ai != nullptr; ai = ai->ai_next) {
                const auto *bytes = reinterpret_cast<const std::uint8_t *>(ai->ai_addr);
                addresses.emplace_back(bytes, bytes + ai->ai_addrlen);
            }
            ::freeaddrinfo(found);
            if (addresses.empty())
                error = "cannot resolve " + host + ": no address";
        }
    } catch (const std::exception &failure) {
        error = "cannot resolve " + host + ": " + failure.what();
    } catch (...) {
        error = "cannot resolve " + host;
    }
    try {
        const std::lock_guard lock(shared->mutex);
        shared->addresses = std::move(addresses);
        shared->error = std::move(error);
    } catch (...) {
        // Only a failed lock can land here; the loop then sees no address.
    }
    const char byte = 1;
    while (::write(shared->pipe_write, &byte, 1) < 0 && errno == EINTR) {
    }
}

AddressResolution::AddressResolution(EventLoop &loop, const std::string &host, std::uint16_t port,
                                     Done done, Lookup lookup)
    : shared_(std::make_shared<Shared>()), done_(std::move(done)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
        throw Error(ErrorKind::unavailable, std::string("pipe2: ") + std::strerror(errno));
    shared_->pipe_read = fds[0];
    shared_->pipe_write = fds[1];
    watch_ =
        loop.watch_fd(shared_->pipe_read, EventLoop::IoDirection::read, [this] { on_answer(); });
    try {
        std::thread(look_up, shared_, host, std::to_string(port), std::move(lookup)).detach();
    } catch (const std::system_error &failure) {
        throw Error(ErrorKind::unavailable,
                    "cannot resolve " + host + ": no thread: " + failure.what());
    }
}

AddressResolution::~AddressResolution() = default;

void AddressResolution::on_answer() noexcept {
    watch_.reset(); // one answer; destroys this very callback, members stay
    Addresses addresses;
    std::string error;
    try {
        const std::lock_guard lock(shared_->mutex);
        addresses = std::move(shared_->addresses);
        error = std::move(shared_->error);
    } catch (...) {
        error = "cannot resolve: the answer was lost";
    }
    if (addresses.empty() && error.empty())
        error = "cannot resolve: no address";
    // `done` may destroy this object: call it from a local.
    Done done = std::move(done_);
    try {
        done(std::move(addresses), std::move(error));
    } catch (...) {
        // The caller's Done is noexcept in spirit; nothing to tell anyone here.
    }
}

} // namespace xaps
