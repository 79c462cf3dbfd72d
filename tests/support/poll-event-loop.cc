#include "poll-event-loop.h"

#include "xaps-error.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace xaps {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

class PollEventLoop::FdWatch : public EventLoop::Watch {
public:
    FdWatch(std::weak_ptr<State> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    ~FdWatch() override {
        if (auto state = state_.lock())
            state->fds.erase(id_);
    }

private:
    std::weak_ptr<State> state_;
    std::uint64_t id_;
};

class PollEventLoop::TimerWatch : public EventLoop::Watch {
public:
    TimerWatch(std::weak_ptr<State> state, TimerKey key) : state_(std::move(state)), key_(key) {}
    ~TimerWatch() override {
        if (auto state = state_.lock())
            state->timers.erase(key_);
    }

private:
    std::weak_ptr<State> state_;
    TimerKey key_;
};

PollEventLoop::PollEventLoop() : state_(std::make_shared<State>()) {}

PollEventLoop::~PollEventLoop() = default;

std::unique_ptr<EventLoop::Watch> PollEventLoop::watch_fd(int fd, IoDirection direction,
                                                          Callback callback) {
    if (fd < 0)
        throw Error(ErrorKind::internal, "PollEventLoop: watch on a negative fd");
    const std::uint64_t id = state_->next_id++;
    state_->fds.emplace(id, std::make_shared<FdEntry>(FdEntry{fd, direction, std::move(callback)}));
    return std::make_unique<FdWatch>(state_, id);
}

std::unique_ptr<EventLoop::Watch> PollEventLoop::call_after(milliseconds delay, Callback callback) {
    const TimerKey key{now() + std::max(delay, milliseconds{0}), state_->next_id++};
    state_->timers.emplace(key, std::make_shared<TimerEntry>(TimerEntry{std::move(callback)}));
    return std::make_unique<TimerWatch>(state_, key);
}

std::size_t PollEventLoop::watch_count() const noexcept {
    return state_->fds.size() + state_->timers.size();
}

void PollEventLoop::run_once(milliseconds max_wait) {
    milliseconds wait = std::max(max_wait, milliseconds{0});
    if (!state_->timers.empty()) {
        const auto until_first =
            std::chrono::ceil<milliseconds>(state_->timers.begin()->first.first - now());
        wait = std::clamp(until_first, milliseconds{0}, wait);
    }
    dispatch_fds(wait);
    dispatch_timers();
}

void PollEventLoop::dispatch_fds(milliseconds wait) {
    pollfds_.clear();
    pollfd_ids_.clear();
    for (const auto &[id, entry] : state_->fds) {
        const short events = entry->direction == IoDirection::read ? POLLIN : POLLOUT;
        pollfds_.push_back(pollfd{entry->fd, events, 0});
        pollfd_ids_.push_back(id);
    }
    const int ready = ::poll(pollfds_.data(), pollfds_.size(), static_cast<int>(wait.count()));
    if (ready < 0) {
        if (errno == EINTR)
            return;
        throw Error(ErrorKind::internal, std::string("poll() failed: ") + std::strerror(errno));
    }
    if (ready == 0)
        return;
    for (std::size_t i = 0; i < pollfds_.size(); i++) {
        if (pollfds_[i].revents == 0)
            continue;
        // An earlier callback may have cancelled this watch; holding the entry
        // keeps its callback alive even if it cancels itself while running.
        const auto found = state_->fds.find(pollfd_ids_[i]);
        if (found == state_->fds.end())
            continue;
        const std::shared_ptr<FdEntry> entry = found->second;
        entry->callback();
    }
}

void PollEventLoop::dispatch_timers() {
    // Only timers due now: one re-armed with a zero delay from its own
    // callback runs in the next iteration, not in an endless loop here.
    const TimerKey due_until{now(), state_->next_id};
    while (!state_->timers.empty() && state_->timers.begin()->first < due_until) {
        const auto first = state_->timers.begin();
        const std::shared_ptr<TimerEntry> entry = std::move(first->second);
        state_->timers.erase(first);
        entry->callback();
    }
}

bool PollEventLoop::run_until(const std::function<bool()> &done, milliseconds timeout) {
    const auto deadline = now() + timeout;
    stopped_ = false;
    while (!done()) {
        const auto left = std::chrono::ceil<milliseconds>(deadline - now());
        if (left <= milliseconds{0} || stopped_)
            return done();
        run_once(std::min(left, milliseconds{100}));
    }
    return true;
}

void PollEventLoop::run() {
    stopped_ = false;
    while (!stopped_)
        run_once(milliseconds{1000});
}

} // namespace xaps
