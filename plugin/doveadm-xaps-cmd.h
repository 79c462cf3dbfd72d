// The `doveadm xaps ...` commands, one per doveadm-xaps-<command>.cc, and
// what they share to describe themselves to doveadm. Include after
// dovecot-cxx.h.
#pragma once

#include "dovecot-cxx.h"
#include "xaps-error.h"

#include <string>

namespace xaps::doveadm {

// One option of a command. DOVEADM_CMD_PARAM() builds a C compound literal,
// which C++ lacks: tables of these, ended by param_end(), take its place.
inline struct doveadm_cmd_param param(char short_opt, const char *name, doveadm_cmd_param_t type,
                                      doveadm_cmd_param_flag_t flags = CMD_PARAM_FLAG_NONE) {
    return dovecot::doveadm_param(short_opt, name, type, flags);
}

inline struct doveadm_cmd_param param_end() {
    return param('\0', nullptr, CMD_PARAM_BOOL);
}

inline struct doveadm_cmd_ver2 command(const char *name, doveadm_command_ver2_t *function,
                                       const char *usage,
                                       const struct doveadm_cmd_param *parameters) {
    struct doveadm_cmd_ver2 cmd {};
    cmd.cmd = function;
    cmd.name = name;
    cmd.usage = usage;
    cmd.flags = CMD_FLAG_NONE;
    cmd.parameters = parameters;
    return cmd;
}

// Refuses the command's arguments (EX_USAGE), showing how to call it.
[[noreturn]] inline void usage_error(const struct doveadm_cmd_ver2 &cmd,
                                     const std::string &problem) {
    throw Error(ErrorKind::invalid_input, problem + " (usage: doveadm " + cmd.name +
                                              (*cmd.usage == '\0' ? "" : " ") + cmd.usage + ")");
}

extern struct doveadm_cmd_ver2 cmd_xaps_list;
extern struct doveadm_cmd_ver2 cmd_xaps_purge;
extern struct doveadm_cmd_ver2 cmd_xaps_status;
extern struct doveadm_cmd_ver2 cmd_xaps_test;
extern struct doveadm_cmd_ver2 cmd_xaps_import;
extern struct doveadm_cmd_ver2 cmd_xaps_migrate;
extern struct doveadm_cmd_ver2 cmd_xaps_hash_password;
extern struct doveadm_cmd_ver2 cmd_xaps_provision;

} // namespace xaps::doveadm
