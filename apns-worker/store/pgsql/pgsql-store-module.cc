// The entry point the worker dlsym()s in xaps-store-pgsql.so. Nothing may
// cross it as an exception: the worker and the module meet only through this
// C symbol.
#include "pgsql-registration-store.h"

#include <exception>
#include <new>

extern "C" __attribute__((visibility("default"))) xaps::SharedRegistrationStore *
xaps_open_shared_store(const xaps::SharedStoreOptions *options, std::string *error_r) noexcept {
    try {
        if (options == nullptr) {
            if (error_r != nullptr) {
                *error_r = "no options";
            }
            return nullptr;
        }
        return xaps::open_pgsql_store(*options).release();
    } catch (const std::exception &error) {
        try {
            if (error_r != nullptr) {
                *error_r = error.what();
            }
        } catch (...) {
        }
    } catch (...) {
        try {
            if (error_r != nullptr) {
                *error_r = "unknown error";
            }
        } catch (...) {
        }
    }
    return nullptr;
}
