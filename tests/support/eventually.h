// Waiting for a condition in tests: polls until it holds or the timeout
// passes. The timeout only bounds a failure; a loaded machine running
// sanitizers must still meet it, so callers choose it generously.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace xaps::test {

// True as soon as `condition` holds; false if it still does not after `timeout`.
inline bool eventually(const std::function<bool()> &condition, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!condition()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return condition();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

} // namespace xaps::test
