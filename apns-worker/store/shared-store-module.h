// Loads the shared store's module, xaps-store-pgsql.so, which links to the
// database's client library (libpq): the worker loads it only when
// xaps_shared_store is set, so the package works without libpq installed.
// The module sits next to the worker's executable, in the build tree and
// when installed.
#pragma once

#include "shared-registration-store.h"

#include <memory>
#include <string>

namespace xaps {

class SharedStoreModule {
public:
    static constexpr const char *file_name = "xaps-store-pgsql.so";
    static constexpr const char *entry_point = "xaps_open_shared_store";

    // Loads `directory`/xaps-store-pgsql.so; an empty directory means that
    // of this process's executable (/proc/self/exe). Throws Error(config)
    // naming the file, the loader's reason and what to install.
    explicit SharedStoreModule(const std::string &directory = {});
    // Unloads the module: every store it opened must be gone by then.
    ~SharedStoreModule();
    SharedStoreModule(const SharedStoreModule &) = delete;
    SharedStoreModule &operator=(const SharedStoreModule &) = delete;

    // Opens the store (xaps_open_shared_store). Throws Error(config) with the
    // module's reason when it cannot.
    std::unique_ptr<SharedRegistrationStore> open(const SharedStoreOptions &options) const;

    const std::string &path() const noexcept { return path_; }

private:
    using OpenFunction = SharedRegistrationStore *(*)(const SharedStoreOptions *, std::string *);

    std::string path_;
    void *handle_ = nullptr;
    OpenFunction open_ = nullptr;
};

// The directory of this process's executable, from /proc/self/exe.
std::string executable_directory();

} // namespace xaps
