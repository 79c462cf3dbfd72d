#include "worker-settings.h"

#include "dovecot-cxx.h"

namespace xaps {

XapsSettings read_worker_settings(struct master_service *service) {
    return read_xaps_settings(dovecot::service_setting_lookup(service));
}

} // namespace xaps
