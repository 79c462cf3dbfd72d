// What the worker core needs from an event loop: fd readiness and timers.
// The worker adapts Dovecot's ioloop to it (dovecot-event-loop.*); tests and
// benchmarks use PollEventLoop. Keeping the core on this interface is what lets
// it build and be tested without Dovecot headers.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace xaps {

class EventLoop {
public:
    using Callback = std::function<void()>;

    // Destroying a Watch cancels it. A callback may destroy its own Watch.
    class Watch {
    public:
        virtual ~Watch() = default;
    };

    enum class IoDirection { read, write };

    virtual ~EventLoop() = default;

    // Level-triggered: called whenever fd is ready in that direction, until
    // the Watch is destroyed.
    virtual std::unique_ptr<Watch> watch_fd(int fd, IoDirection direction, Callback callback) = 0;
    // One-shot: called once, delay from now, unless the Watch is destroyed first.
    virtual std::unique_ptr<Watch> call_after(std::chrono::milliseconds delay,
                                              Callback callback) = 0;
    virtual std::chrono::steady_clock::time_point now() const {
        return std::chrono::steady_clock::now();
    }
};

} // namespace xaps
