#include "bench-devices.h"

#include "registration-store.h"
#include "xaps-error.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

namespace fs = std::filesystem;

namespace xaps::bench {

std::string device_user(std::size_t index) {
    return "bench" + std::to_string(index);
}

std::string device_token(std::size_t index) {
    char token[65];
    std::snprintf(token, sizeof(token), "b0b5%052zx%08zx", index * 2654435761u, index);
    return token;
}

std::vector<std::size_t> random_devices(std::size_t store_size, std::size_t count) {
    std::mt19937_64 random(42);
    std::uniform_int_distribution<std::size_t> pick(0, store_size - 1);
    std::vector<std::size_t> devices(count);
    for (auto &device : devices) {
        device = pick(random);
    }
    return devices;
}

Registration device_registration(std::size_t index, std::vector<std::string> mailboxes) {
    char account_id[40];
    std::snprintf(account_id, sizeof(account_id), "B3AC0000-0000-4000-8000-%012zX", index);
    Registration registration;
    registration.user = device_user(index);
    registration.account_id = account_id;
    registration.device_token = device_token(index);
    registration.subtopic = "com.apple.mobilemail";
    registration.aps_version = 2;
    registration.mailboxes = std::move(mailboxes);
    return registration;
}

void populate_store(const std::string &path, std::size_t first, std::size_t count,
                    const test::SystemUser &owner, std::size_t per_commit) {
    {
        auto options = LmdbStoreOptions::from(default_xaps_settings());
        options.path = path;
        auto store = open_lmdb_store(options);
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        std::vector<Registration> batch;
        for (std::size_t index = first; index < first + count;) {
            batch.clear();
            for (; index < first + count && batch.size() < per_commit; ++index) {
                batch.push_back(device_registration(index));
            }
            for (const auto &result : store->put_batch(batch, now)) {
                if (result) {
                    throw *result;
                }
            }
        }
    }
    for (const auto &entry : fs::directory_iterator(path)) {
        if (::chown(entry.path().c_str(), owner.uid, owner.gid) != 0) {
            throw Error(ErrorKind::internal,
                        "chown " + entry.path().string() + ": " + std::strerror(errno));
        }
    }
}

} // namespace xaps::bench
