// Says in the log, before the master starts dropping them, that the worker's
// connections are running out. Every imap, lmtp and lda process that reports
// mail or registers a phone holds a connection while it is busy; past
// `service xaps { client_limit }` the master drops new ones (its own log says
// "client_limit (N) reached") and the pushes they carried are lost.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace xaps {

class ClientLimitWatch {
public:
    // client_limit: what the master hands this process at most (0: unknown,
    // nothing is ever said).
    explicit ClientLimitWatch(std::size_t client_limit) noexcept : client_limit_(client_limit) {}

    // With the number of open connections after one was accepted: a warning
    // the first time they reach 90% of the limit, and again only after they
    // have fallen below half of it in between.
    std::optional<std::string> on_accept(std::size_t connections);

private:
    std::size_t client_limit_;
    bool warned_ = false;
};

} // namespace xaps
