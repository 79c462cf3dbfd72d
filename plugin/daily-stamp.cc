#include "daily-stamp.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace xaps::plugin {

bool take_daily_turn(const std::string &path, std::chrono::system_clock::time_point now,
                     std::chrono::seconds interval) {
    const auto now_seconds =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        const auto age = now_seconds - static_cast<long long>(st.st_mtim.tv_sec);
        if (age >= 0 && age < interval.count()) {
            return false;
        }
    }
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        const struct timespec times[2] = {{now_seconds, 0}, {now_seconds, 0}};
        (void)::futimens(fd, times);
        ::close(fd);
    }
    return true;
}

} // namespace xaps::plugin
