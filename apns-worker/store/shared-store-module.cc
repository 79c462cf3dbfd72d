#include "shared-store-module.h"

#include "xaps-error.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace xaps {

std::string executable_directory() {
    std::vector<char> buffer(4096);
    const ssize_t length = ::readlink("/proc/self/exe", buffer.data(), buffer.size());
    if (length < 0 || static_cast<std::size_t>(length) >= buffer.size()) {
        throw Error(ErrorKind::config, std::string("cannot find the worker's executable "
                                                   "(/proc/self/exe): ") +
                                           (length < 0 ? std::strerror(errno) : "path too long"));
    }
    std::string path(buffer.data(), static_cast<std::size_t>(length));
    const std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

SharedStoreModule::SharedStoreModule(const std::string &directory) {
    path_ = (directory.empty() ? executable_directory() : directory) + "/" + file_name;
    ::dlerror();
    handle_ = ::dlopen(path_.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
        const char *reason = ::dlerror();
        throw Error(ErrorKind::config,
                    "xaps_shared_store is set, but the shared store module " + path_ +
                        " cannot be loaded: " + (reason ? reason : "unknown reason") +
                        " (it needs libpq5, the PostgreSQL client library: apt install libpq5; "
                        "or leave xaps_shared_store empty to keep registrations in LMDB)");
    }
    ::dlerror();
    void *symbol = ::dlsym(handle_, entry_point);
    if (symbol == nullptr) {
        const char *reason = ::dlerror();
        ::dlclose(handle_);
        handle_ = nullptr;
        throw Error(ErrorKind::config, "the shared store module " + path_ + " has no " +
                                           entry_point + ": " +
                                           (reason ? reason : "unknown reason") +
                                           " (does it belong to another version of xaps?)");
    }
    open_ = reinterpret_cast<OpenFunction>(symbol);
}

SharedStoreModule::~SharedStoreModule() {
    if (handle_ != nullptr) {
        ::dlclose(handle_);
    }
}

std::unique_ptr<SharedRegistrationStore>
SharedStoreModule::open(const SharedStoreOptions &options) const {
    std::string error;
    std::unique_ptr<SharedRegistrationStore> store(open_(&options, &error));
    if (!store) {
        throw Error(ErrorKind::config,
                    "cannot open the shared registration store: " +
                        (error.empty() ? std::string("the module gave no reason") : error));
    }
    return store;
}

} // namespace xaps
