// PollEventLoop on real pipes and real time: the contract of EventLoop
// (level-triggered fds, one-shot timers, cancel by destroying the Watch).
#include "poll-event-loop.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace xaps {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using Direction = EventLoop::IoDirection;

struct Pipe {
    int read_end = -1;
    int write_end = -1;
    Pipe() {
        int fds[2];
        EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
        read_end = fds[0];
        write_end = fds[1];
    }
    ~Pipe() {
        ::close(read_end);
        ::close(write_end);
    }
    void put(const std::string &data) const {
        ASSERT_EQ(::write(write_end, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    }
};

TEST(PollEventLoopTest, TimersFireOnceInDeadlineOrderAndNotEarly) {
    PollEventLoop loop;
    std::vector<int> fired;
    const auto start = steady_clock::now();
    steady_clock::time_point fired_at_30;
    auto late = loop.call_after(30ms, [&] {
        fired.push_back(30);
        fired_at_30 = steady_clock::now();
    });
    auto early = loop.call_after(10ms, [&] { fired.push_back(10); });
    auto zero = loop.call_after(0ms, [&] { fired.push_back(0); });
    EXPECT_TRUE(loop.run_until([&] { return fired.size() == 3; }, 2s));
    EXPECT_EQ(fired, (std::vector<int>{0, 10, 30}));
    EXPECT_GE(fired_at_30 - start, 30ms);
    loop.run_once(40ms);
    EXPECT_EQ(fired.size(), 3u) << "one-shot timers fire once";
}

TEST(PollEventLoopTest, DestroyingATimerWatchCancelsIt) {
    PollEventLoop loop;
    bool fired = false;
    auto timer = loop.call_after(5ms, [&] { fired = true; });
    timer.reset();
    EXPECT_FALSE(loop.run_until([&] { return fired; }, 30ms));
    EXPECT_EQ(loop.watch_count(), 0u);
}

TEST(PollEventLoopTest, ReadWatchIsLevelTriggeredUntilDrained) {
    PollEventLoop loop;
    Pipe pipe;
    int calls = 0;
    std::string received;
    auto watch = loop.watch_fd(pipe.read_end, Direction::read, [&] {
        calls++;
        char byte;
        if (::read(pipe.read_end, &byte, 1) == 1)
            received += byte;
    });
    pipe.put("abc");
    // One byte per call: the watch keeps firing while data is left.
    EXPECT_TRUE(loop.run_until([&] { return received == "abc"; }, 1s));
    EXPECT_EQ(calls, 3);
    loop.run_once(20ms);
    EXPECT_EQ(calls, 3) << "no call once drained";
}

TEST(PollEventLoopTest, WriteWatchFiresWhenWritable) {
    PollEventLoop loop;
    Pipe pipe;
    bool writable = false;
    auto watch = loop.watch_fd(pipe.write_end, Direction::write, [&] { writable = true; });
    loop.run_once(1s);
    EXPECT_TRUE(writable);
}

TEST(PollEventLoopTest, CallbackMayDestroyItsOwnWatch) {
    PollEventLoop loop;
    Pipe pipe;
    int calls = 0;
    std::unique_ptr<EventLoop::Watch> watch;
    watch = loop.watch_fd(pipe.read_end, Direction::read, [&] {
        calls++;
        watch.reset(); // the callback object must stay valid until it returns
    });
    pipe.put("x");
    loop.run_once(1s);
    loop.run_once(10ms);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(loop.watch_count(), 0u);
}

TEST(PollEventLoopTest, WatchCancelledByAnEarlierCallbackDoesNotFire) {
    PollEventLoop loop;
    Pipe first;
    Pipe second;
    int calls = 0;
    std::unique_ptr<EventLoop::Watch> watch_a;
    std::unique_ptr<EventLoop::Watch> watch_b;
    // Whichever runs first cancels the other, although both are ready.
    watch_a = loop.watch_fd(first.read_end, Direction::read, [&] {
        calls++;
        watch_b.reset();
        watch_a.reset();
    });
    watch_b = loop.watch_fd(second.read_end, Direction::read, [&] {
        calls++;
        watch_a.reset();
        watch_b.reset();
    });
    first.put("x");
    second.put("y");
    loop.run_once(1s);
    EXPECT_EQ(calls, 1);
}

TEST(PollEventLoopTest, ZeroDelayTimerRearmedFromItsCallbackDoesNotStarveFds) {
    PollEventLoop loop;
    Pipe pipe;
    int ticks = 0;
    bool read = false;
    std::unique_ptr<EventLoop::Watch> timer;
    std::function<void()> tick = [&] {
        ticks++;
        timer = loop.call_after(0ms, tick);
    };
    timer = loop.call_after(0ms, tick);
    auto watch = loop.watch_fd(pipe.read_end, Direction::read, [&] { read = true; });
    pipe.put("x");
    EXPECT_TRUE(loop.run_until([&] { return read; }, 1s));
    EXPECT_LE(ticks, 2);
}

TEST(PollEventLoopTest, RunUntilReportsTimeoutAndStopEndsRun) {
    PollEventLoop loop;
    const auto start = steady_clock::now();
    EXPECT_FALSE(loop.run_until([] { return false; }, 50ms));
    EXPECT_GE(steady_clock::now() - start, 50ms);
    EXPECT_LT(steady_clock::now() - start, 1s);

    auto stopper = loop.call_after(10ms, [&] { loop.stop(); });
    loop.run(); // returns only because of stop()
    SUCCEED();
}

TEST(PollEventLoopTest, WatchOutlivingItsLoopIsHarmless) {
    std::unique_ptr<EventLoop::Watch> timer;
    std::unique_ptr<EventLoop::Watch> fd_watch;
    Pipe pipe;
    {
        PollEventLoop loop;
        timer = loop.call_after(1s, [] {});
        fd_watch = loop.watch_fd(pipe.read_end, Direction::read, [] {});
    }
    timer.reset();
    fd_watch.reset();
    SUCCEED();
}

TEST(PollEventLoopTest, RunOnceWaitsForTheEarliestTimerNotLonger) {
    PollEventLoop loop;
    bool fired = false;
    auto timer = loop.call_after(20ms, [&] { fired = true; });
    const auto start = steady_clock::now();
    loop.run_once(5s);
    EXPECT_TRUE(fired);
    EXPECT_LT(steady_clock::now() - start, 1s);
}

} // namespace
} // namespace xaps
