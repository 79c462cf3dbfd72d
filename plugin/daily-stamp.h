// "At most once a day" across processes: a file whose modification time
// records when something was last done. The LDA is a new process for every
// mail, so a warning it should give once (not per mail) needs state outside
// the process.
#pragma once

#include <chrono>
#include <string>

namespace xaps::plugin {

// True when the stamp at `path` is missing or at least `interval` older than
// `now` (also when it is in the future, so a clock set back cannot silence it
// for long), and then sets the stamp to `now`; false otherwise. Also true
// when no stamp can be kept there (e.g. a virtual user's home that Dovecot
// never created): a warning said on every call beats one never said.
bool take_daily_turn(const std::string &path, std::chrono::system_clock::time_point now,
                     std::chrono::seconds interval = std::chrono::hours(24));

} // namespace xaps::plugin
