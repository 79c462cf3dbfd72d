#include "client-limit-watch.h"

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

} // namespace xaps
