// The benchmarks' users and their iPhones: device i belongs to user
// "bench<i>" and has its own account id and token, so every NOTIFY for a
// user makes exactly one push and no two pushes coalesce.
#pragma once

#include "registration.h"
#include "test-users.h"

#include <cstddef>
#include <string>
#include <vector>

namespace xaps::bench {

std::string device_user(std::size_t index);
// 64 lower-case hex digits, distinct per index.
std::string device_token(std::size_t index);
// What REGISTER would store for device `index` (times are set by the store).
Registration device_registration(std::size_t index,
                                 std::vector<std::string> mailboxes = {"INBOX", "Sent Messages"});
// `count` device indexes in [0, store_size), drawn with a fixed seed so that
// every run and every benchmark looks up the same devices.
std::vector<std::size_t> random_devices(std::size_t store_size, std::size_t count);

// Writes devices [first, first + count) straight into the LMDB store at
// `path` (which no process may have open), `per_commit` registrations per
// transaction, and hands its files to `owner` (the worker's user).
void populate_store(const std::string &path, std::size_t first, std::size_t count,
                    const test::SystemUser &owner, std::size_t per_commit = 10000);

} // namespace xaps::bench
