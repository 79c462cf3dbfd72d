// EventLoop on Dovecot's ioloop: how the worker core runs inside the
// master-supervised xaps service.
#pragma once

#include "event-loop.h"

namespace xaps {

class DovecotEventLoop final : public EventLoop {
public:
    std::unique_ptr<Watch> watch_fd(int fd, IoDirection direction, Callback callback) override;
    std::unique_ptr<Watch> call_after(std::chrono::milliseconds delay, Callback callback) override;
};

} // namespace xaps
