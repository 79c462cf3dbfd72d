// Dovecot's tab escaping (str_tabescape / t_strsplit_tabescaped), so that
// programs without libdovecot (tests, benchmarks, the core's unit tests) speak
// the worker protocol byte for byte like Dovecot's own connection API does.
// \001 -> \0011, \t -> \001t, \r -> \001r, \n -> \001n.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace xaps {

std::string tab_escape(std::string_view field);
std::string tab_unescape(std::string_view field);

// Joins escaped fields with tabs and appends "\n".
std::string join_line(std::span<const std::string> fields);
// Splits a line (without its "\n") at tabs and unescapes each field.
std::vector<std::string> split_line(std::string_view line);

} // namespace xaps
