#pragma once
// The interactive shell: libedit line editing and history on a terminal, plain lines from stdin
// otherwise (scripts, tests). Commands: open, login, logout, whoami, pwd, cd, ls, mkdir, rm, mv,
// put, get, quota, exec, chat, echo, hello, help, quit. A failing command prints
// "coserve-cli: ..." and the shell goes on.
#include <boost/asio/io_context.hpp>

#include "env.hpp"

namespace coserve::cli {

// Returns 0, or the exit code of the last command that failed.
int run_shell(asio::io_context& io, Env env);

}  // namespace coserve::cli
