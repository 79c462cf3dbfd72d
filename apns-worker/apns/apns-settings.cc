#include "apns-settings.h"

namespace xaps {

ApnsSettings ApnsSettings::from(const XapsSettings &settings) {
    ApnsSettings apns;
    apns.host = settings.apns_host;
    apns.port = settings.apns_port;
    apns.ca_file = settings.apns_ca_file;
    switch (settings.credential_kind()) {
    case CredentialKind::pem:
        apns.cert_file = settings.apns_cert_file;
        apns.key_file = settings.apns_key_file;
        break;
    case CredentialKind::pkcs12:
        apns.p12_file = settings.apns_p12_file;
        apns.p12_password = settings.apns_p12_password;
        break;
    case CredentialKind::token:
        apns.token_key_file = settings.apns_token_key_file;
        apns.key_id = settings.apns_key_id;
        apns.team_id = settings.apns_team_id;
        apns.topic = settings.apns_topic;
        break;
    case CredentialKind::apple_id:
    case CredentialKind::none:
        break;
    }
    apns.push_type = settings.apns_push_type;
    apns.priority = settings.apns_priority;
    apns.expiration = settings.apns_expiration;
    apns.connections = settings.apns_connections;
    return apns;
}

} // namespace xaps
