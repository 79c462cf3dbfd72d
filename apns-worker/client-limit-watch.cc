#include "client-limit-watch.h"

#include <algorithm>

namespace xaps {

std::optional<std::string> ClientLimitWatch::on_accept(std::size_t connections) {
    if (client_limit_ == 0) {
        return std::nullopt;
    }
    // Integer thresholds: 90% rounded up, half rounded down.
    const std::size_t warn_at = (client_limit_ * 9 + 9) / 10;
    if (connections < client_limit_ / 2) {
        warned_ = false;
    }
    if (warned_ || connections < warn_at) {
        return std::nullopt;
    }
    warned_ = true;
    return std::to_string(connections) + " connections open, " +
           std::to_string(connections * 100 / client_limit_) +
           "% of service xaps { client_limit = " + std::to_string(client_limit_) +
           " }: beyond it the master drops the connections of imap, lmtp and lda processes "
           "and the pushes they carry are lost; raise client_limit above the sum of the "
           "imap, lmtp, pop3 and submission process limits";
}

std::optional<std::string> ClientLimitWatch::on_process_limit(std::string_view service,
                                                              std::size_t process_limit) {
    if (auto known = process_limits_.find(service); known != process_limits_.end()) {
        known->second = std::max(known->second, process_limit);
    } else if (process_limits_.size() < max_services) {
        process_limits_.emplace(std::string(service), process_limit);
    }
    std::uint64_t sum = 0;
    for (const auto &entry : process_limits_) {
        sum += entry.second;
    }
    if (client_limit_ == 0 || sum <= client_limit_ || sum <= warned_process_limit_sum_) {
        return std::nullopt;
    }
    warned_process_limit_sum_ = sum;
    std::string counted;
    for (const auto &[name, limit] : process_limits_) {
        counted += (counted.empty() ? "" : " + ") + ("service " + name) +
                   " { process_limit=" + std::to_string(limit) + " }";
    }
    // Worded like the master's own warnings about auth's and anvil's client_limit.
    const std::string required = std::to_string(sum);
    return "service xaps { client_limit=" + std::to_string(client_limit_) +
           " } is lower than required under max. load (" + required +
           "): each mail process holds a connection to the worker while it is busy, and past "
           "client_limit the master drops new ones and the pushes they carry are lost. Counted "
           "for the services whose processes connected: " +
           counted + ". Raise service xaps { client_limit } to at least " + required +
           " (Dovecot's fd limit, ulimit -n or LimitNOFILE, must allow as many)";
}

} // namespace xaps
