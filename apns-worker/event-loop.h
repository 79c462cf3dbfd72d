// What the worker core needs from an event loop: fd readiness and timers.
// The worker adapts Dovecot's ioloop to it (dovecot-event-loop.*); tests and
// benchmarks use PollEventLoop. Keeping the core on this interface is what lets
// it build and be tested without Dovecot headers.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

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

    // Runs `callback` once, later, from the loop: never from within post(),
    // so a caller may post while holding state a callback would change. The
    // loop owns the callback until then and drops it uncalled if the loop
    // goes first; what it captures must outlive it or be guarded (weak_ptr).
    // Callbacks run in the order they were posted.
    void post(Callback callback) {
        posted_.push_back(std::move(callback));
        if (!posted_timer_) {
            posted_timer_ = call_after(std::chrono::milliseconds(0), [this] { run_posted(); });
        }
    }

private:
    void run_posted() {
        std::vector<Callback> batch;
        batch.swap(posted_);
        posted_timer_.reset(); // what the batch posts runs on a later turn
        for (std::size_t i = 0; i < batch.size(); i++) {
            try {
                batch[i]();
            } catch (...) {
                // The loop reports the exception; the callbacks after it must
                // still run, as promised to whoever posted them.
                for (std::size_t rest = batch.size(); rest > i + 1; rest--) {
                    posted_.insert(posted_.begin(), std::move(batch[rest - 1]));
                }
                if (!posted_.empty() && !posted_timer_) {
                    posted_timer_ =
                        call_after(std::chrono::milliseconds(0), [this] { run_posted(); });
                }
                throw;
            }
        }
    }

    std::vector<Callback> posted_;
    std::unique_ptr<Watch> posted_timer_;
};

} // namespace xaps
