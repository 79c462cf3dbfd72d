// Says in the log, before the master starts dropping them, that the worker's
// connections are running out. Every imap, lmtp and lda process that reports
// mail or registers a phone holds a connection while it is busy; past
// `service xaps { client_limit }` the master drops new ones (its own log says
// "client_limit (N) reached") and the pushes they carry are lost.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace xaps {

class ClientLimitWatch {
public:
    // Services whose process limits are remembered: a peer that announces
    // ever new names cannot grow the worker.
    static constexpr std::size_t max_services = 32;

    // client_limit: what the master hands this process at most (0: unknown,
    // nothing is ever said).
    explicit ClientLimitWatch(std::size_t client_limit) noexcept : client_limit_(client_limit) {}

    // With the number of open connections after one was accepted: a warning
    // the first time they reach 90% of the limit, and again only after they
    // have fallen below half of it in between.
    std::optional<std::string> on_accept(std::size_t connections);

    // With a mail process's announcement (HELLO) of its service's
    // process_limit: each of those processes may hold a connection at once,
    // so the largest limit heard per service, summed over the services, is
    // what the worker may have to hold. A warning the first time that sum
    // exceeds client_limit, and again only when it has grown since; the
    // configuration cannot be caught any earlier, since the worker cannot
    // read other services' settings.
    std::optional<std::string> on_process_limit(std::string_view service,
                                                std::size_t process_limit);

private:
    std::size_t client_limit_;
    bool warned_ = false;
    std::map<std::string, std::size_t, std::less<>> process_limits_;
    std::uint64_t warned_process_limit_sum_ = 0;
};

} // namespace xaps
