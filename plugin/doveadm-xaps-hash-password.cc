// doveadm xaps hash-password: the value for xaps_apple_password_hash, the
// SHA-256 of the Apple ID password in lower-case hex, as `xapsd -pass`
// printed it (Go: hex.EncodeToString(sha256.Sum256(line without "\n"))).
// The password is one line of stdin, read without echo from a terminal
// (Dovecot's askpass, which ends the line at CR too). Prints field `hash`.
#include "doveadm-xaps-cmd.h"
#include "doveadm-xaps-worker.h"
#include "hex-digest.h"

#include <cstring>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <sysexits.h>

namespace xaps::doveadm {

namespace {

void hash_password(struct doveadm_cmd_context *cctx) {
    if (cctx->conn_type != DOVEADM_CONNECTION_TYPE_CLI) {
        usage_error(cmd_xaps_hash_password,
                    "it reads the password from a terminal: run it locally");
    }
    // askpass reads into the data stack; the copy there is wiped too.
    char *typed = const_cast<char *>(t_askpass("Apple ID password: "));
    std::size_t length = std::strlen(typed);
    std::string hash =
        length == 0 ? std::string()
                    : hex_digest(EVP_sha256(), std::string_view(typed, length), HexCase::lower);
    OPENSSL_cleanse(typed, length);
    if (hash.empty()) {
        throw Error(ErrorKind::invalid_input, "the password is empty");
    }

    doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
    doveadm_print_header("hash", "hash", DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE);
    doveadm_print(hash.c_str());
}

void cmd_hash_password(struct doveadm_cmd_context *cctx) noexcept {
    run_command("hash-password", [cctx] { hash_password(cctx); });
}

const struct doveadm_cmd_param hash_password_params[] = {
    param_end(),
};

} // namespace

struct doveadm_cmd_ver2 cmd_xaps_hash_password =
    command("xaps hash-password", cmd_hash_password, "", hash_password_params);

} // namespace xaps::doveadm
