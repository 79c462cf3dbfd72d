#include "registration-validation.h"

#include "xaps-error.h"

#include <string>
#include <string_view>

namespace xaps {

namespace {

void require_key_part(std::string_view value, std::string_view name, std::size_t max_length) {
    if (value.empty()) {
        throw Error(ErrorKind::invalid_input, "registration without " + std::string(name));
    }
    if (value.size() > max_length) {
        throw Error(ErrorKind::invalid_input, "registration " + std::string(name) + " too long");
    }
    if (value.find('\0') != std::string_view::npos) {
        throw Error(ErrorKind::invalid_input,
                    "registration " + std::string(name) + " contains a NUL byte");
    }
}

} // namespace

void validate_registration(const Registration &registration) {
    require_key_part(registration.user, "user", limits::max_user_length);
    require_key_part(registration.account_id, "account id", limits::max_account_id_length);
    require_key_part(registration.device_token, "device token", limits::max_device_token_length);
    if (registration.subtopic.size() > limits::max_subtopic_length) {
        throw Error(ErrorKind::invalid_input, "registration subtopic too long");
    }
    if (registration.mailboxes.size() > limits::max_mailboxes) {
        throw Error(ErrorKind::invalid_input, "registration has too many mailboxes");
    }
    for (const auto &mailbox : registration.mailboxes) {
        if (mailbox.size() > limits::max_mailbox_name_length) {
            throw Error(ErrorKind::invalid_input, "registration mailbox name too long");
        }
    }
}

} // namespace xaps
