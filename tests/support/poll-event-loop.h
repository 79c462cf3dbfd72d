// A poll(2)-based EventLoop for tests, benchmarks and mocks. The worker itself
// runs on Dovecot's ioloop (dovecot-event-loop.*); this one exists so that the
// core can be driven without Dovecot.
#pragma once

#include "event-loop.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include <poll.h>

namespace xaps {

class PollEventLoop : public EventLoop {
public:
    PollEventLoop();
    ~PollEventLoop() override;
    PollEventLoop(const PollEventLoop &) = delete;
    PollEventLoop &operator=(const PollEventLoop &) = delete;

    std::unique_ptr<Watch> watch_fd(int fd, IoDirection direction, Callback callback) override;
    std::unique_ptr<Watch> call_after(std::chrono::milliseconds delay, Callback callback) override;

    // Waits at most max_wait for a ready fd or a due timer, then runs every
    // callback that is due. Returns early, without waiting, after stop().
    void run_once(std::chrono::milliseconds max_wait);
    // Runs until done() is true or timeout passes; returns done().
    bool run_until(const std::function<bool()> &done, std::chrono::milliseconds timeout);
    // Runs until stop() is called (from a callback or a signal handler-free context).
    void run();
    void stop() noexcept { stopped_ = true; }

    std::size_t watch_count() const noexcept;

private:
    struct FdEntry {
        int fd;
        IoDirection direction;
        Callback callback;
    };
    struct TimerEntry {
        Callback callback;
    };
    using TimerKey = std::pair<std::chrono::steady_clock::time_point, std::uint64_t>;
    // Shared with every Watch so that a Watch outliving its loop stays harmless.
    struct State {
        std::unordered_map<std::uint64_t, std::shared_ptr<FdEntry>> fds;
        std::map<TimerKey, std::shared_ptr<TimerEntry>> timers;
        std::uint64_t next_id = 1;
    };
    class FdWatch;
    class TimerWatch;

    void dispatch_fds(std::chrono::milliseconds wait);
    void dispatch_timers();

    std::shared_ptr<State> state_;
    bool stopped_ = false;
    // Reused between iterations to keep the loop free of allocations.
    std::vector<pollfd> pollfds_;
    std::vector<std::uint64_t> pollfd_ids_;
};

} // namespace xaps
