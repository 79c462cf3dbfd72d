// Resolves APNs's host name without blocking the event loop. getaddrinfo()
// blocks for as long as the system's resolver takes (seconds per try when a
// DNS server does not answer), and the worker's loop is also what answers
// REGISTER for IMAP and NOTIFY for LMTP. So the lookup runs on a thread of its
// own and its answer comes back through a pipe the loop watches. A thread per
// lookup is enough: lookups happen only when a connection to Apple is made.
// (glibc's getaddrinfo_a() would also need a thread or a signal to wake the
// loop; c-ares would be one more dependency for one lookup per connection.)
#pragma once

#include "event-loop.h"

#include <netdb.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace xaps {

class AddressResolution {
public:
    // The socket addresses (struct sockaddr_*) found, in getaddrinfo()'s order.
    using Addresses = std::vector<std::vector<std::uint8_t>>;
    // `error` is empty on success, else "cannot resolve <host>: <why>".
    using Done = std::function<void(Addresses addresses, std::string error)>;
    // getaddrinfo() by default; tests put a slow or failing one in its place.
    using Lookup = std::function<int(const char *host, const char *service, const addrinfo *hints,
                                     addrinfo **found)>;

    // Starts resolving host:port for a TCP connection. `done` is called once,
    // from the loop, unless this object is destroyed first. Throws Error when
    // no thread or pipe can be made.
    AddressResolution(EventLoop &loop, const std::string &host, std::uint16_t port, Done done,
                      Lookup lookup = ::getaddrinfo);
    // Cancels: a lookup still running finishes on its thread and is dropped.
    ~AddressResolution();
    AddressResolution(const AddressResolution &) = delete;
    AddressResolution &operator=(const AddressResolution &) = delete;

private:
    struct Shared;
    // Runs on the lookup thread.
    static void look_up(const std::shared_ptr<Shared> &shared, const std::string &host,
                        const std::string &service, const Lookup &lookup) noexcept;
    void on_answer() noexcept;

    std::shared_ptr<Shared> shared_;
    Done done_;
    std::unique_ptr<EventLoop::Watch> watch_;
};

} // namespace xaps
