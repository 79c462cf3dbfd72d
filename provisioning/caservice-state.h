// Where the provisioned keys and certificates live: <state_dir>/caservice/
// (mode 0700), one <service>.key and <service>.pem per certificate macOS
// Server asked for (mail.key, mail.pem, calendar.key...), each mode 0600.
// Written by `doveadm xaps provision` as root, so only root can read them;
// the worker loads mail.pem and mail.key (its xaps_apple_id credential) into
// its TLS context before dropping privileges.
#pragma once

#include "caservice-crypto.h"
#include "caservice-messages.h"

#include <optional>
#include <string>
#include <vector>

namespace xaps::caservice {

struct StoredCredential {
    EvpPkeyPtr key;
    X509Ptr certificate;
};

class StateDirectory {
public:
    // state_dir must exist (it is xaps_db_path, created by the package): we
    // never create it as root under the worker's feet. Throws Error(config).
    explicit StateDirectory(const std::string &state_dir);

    const std::string &path() const noexcept { return path_; } // <state_dir>/caservice
    std::string key_path(const ServiceSpec &service) const;
    std::string certificate_path(const ServiceSpec &service) const;

    // Every service's key and certificate, in the order given, or nullopt
    // when any is missing, unparsable or not a pair; problem_r then says
    // which (empty when nothing was ever stored). Throws Error(config) when
    // a file exists but cannot be read.
    std::optional<std::vector<StoredCredential>> load(const std::vector<ServiceSpec> &services,
                                                      std::string &problem_r) const;

    // Replaces the file atomically (temporary file, fsync, rename), mode 0600.
    // Throws Error(config) naming the file.
    void write_key(const ServiceSpec &service, EVP_PKEY *key) const;
    void write_certificate(const ServiceSpec &service, X509 *certificate) const;

private:
    void write_private_file(const std::string &path, const std::string &content) const;

    std::string path_;
};

} // namespace xaps::caservice
