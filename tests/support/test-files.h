// Files and directories as tests handle them: whole-file reads and writes,
// and private temporary directories (temporary-directory.h).
#pragma once

#include "test-users.h"

#include <string>
#include <sys/types.h>

namespace xaps::test {

// The whole file; empty when it cannot be read.
std::string read_file(const std::string &path);
// Replaces the file with `content` and gives it `mode`. Throws xaps::Error.
void write_file(const std::string &path, const std::string &content, mode_t mode = 0644);
// Creates `path` and its parents, gives it `mode` and `owner` (null: it stays
// the creator's). Throws xaps::Error.
void make_directory(const std::string &path, mode_t mode, const SystemUser *owner = nullptr);

} // namespace xaps::test
