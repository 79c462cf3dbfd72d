#include "dovecot-event-loop.h"

#include "dovecot-cxx.h"
#include "worker-log.h"

#include <exception>

namespace xaps {

namespace {

// The core catches its own errors; this is the last line before Dovecot's C
// code, which must never see an exception.
void run_guarded(const EventLoop::Callback &callback) noexcept {
    try {
        callback();
    } catch (const std::exception &e) {
        e_error(worker_event(), "unexpected error in an event callback: %s", e.what());
    } catch (...) {
        e_error(worker_event(), "unexpected error in an event callback");
    }
}

class IoWatch final : public EventLoop::Watch {
public:
    IoWatch(int fd, EventLoop::IoDirection direction, EventLoop::Callback callback)
        : callback_(std::make_shared<EventLoop::Callback>(std::move(callback))) {
        io_ = io_add(fd, direction == EventLoop::IoDirection::read ? IO_READ : IO_WRITE,
                     &IoWatch::on_ready, this);
    }
    ~IoWatch() override { io_remove(&io_); }
    IoWatch(const IoWatch &) = delete;
    IoWatch &operator=(const IoWatch &) = delete;

private:
    static void on_ready(IoWatch *self) noexcept {
        // The callback may destroy this watch: keep the function alive by
        // its own reference, and touch nothing of `self` afterwards.
        std::shared_ptr<EventLoop::Callback> callback = self->callback_;
        run_guarded(*callback);
    }

    std::shared_ptr<EventLoop::Callback> callback_;
    struct io *io_ = nullptr;
};

class TimerWatch final : public EventLoop::Watch {
public:
    TimerWatch(std::chrono::milliseconds delay, EventLoop::Callback callback)
        : callback_(std::move(callback)) {
        auto msecs = static_cast<unsigned int>(std::max<std::int64_t>(delay.count(), 0));
        timeout_ = timeout_add(msecs, &TimerWatch::on_timeout, this);
    }
    ~TimerWatch() override { timeout_remove(&timeout_); }
    TimerWatch(const TimerWatch &) = delete;
    TimerWatch &operator=(const TimerWatch &) = delete;

private:
    static void on_timeout(TimerWatch *self) noexcept {
        // One-shot: disarm first, then hand the callback over, so that
        // destroying this watch from inside it is safe.
        timeout_remove(&self->timeout_);
        EventLoop::Callback callback = std::move(self->callback_);
        run_guarded(callback);
    }

    EventLoop::Callback callback_;
    struct timeout *timeout_ = nullptr;
};

} // namespace

std::unique_ptr<EventLoop::Watch> DovecotEventLoop::watch_fd(int fd, IoDirection direction,
                                                             Callback callback) {
    return std::make_unique<IoWatch>(fd, direction, std::move(callback));
}

std::unique_ptr<EventLoop::Watch> DovecotEventLoop::call_after(std::chrono::milliseconds delay,
                                                               Callback callback) {
    return std::make_unique<TimerWatch>(delay, std::move(callback));
}

} // namespace xaps
