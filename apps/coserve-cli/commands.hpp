#pragma once
// The commands both front ends share: the one-shot subcommands (main.cpp) and the shell
// (shell.cpp). Each prints its result on stdout and throws Failure on any error.
#include <string>
#include <vector>

#include "env.hpp"

namespace coserve::cli {

awaitable<void> hello(Env env);
awaitable<void> echo(Env env, std::string text);
awaitable<void> whoami(Env env);
awaitable<std::string> pwd(Env env);
// Changes the working directory of files and command alike; returns the new one.
awaitable<std::string> cd(Env env, std::string path);
awaitable<void> ls(Env env, std::string path);
awaitable<void> mkdir(Env env, std::string path, bool parents);
awaitable<void> rm(Env env, std::string path, bool recursive);
awaitable<void> mv(Env env, std::string from, std::string to, bool overwrite);
awaitable<void> quota(Env env);

// Runs a remote program (`argv`, or `line` split by the server when argv is empty), copying its
// stdout/stderr live to ours. Ctrl-C sends `core.cancel`. A non-zero exit or a signal is a
// failure (exit 1) that names it.
awaitable<void> exec(Env env, std::vector<std::string> argv, std::string line);

// Joins `room` (as `nick`, or the user name), says `text`.
awaitable<void> chat_say(Env env, std::string room, std::string nick, std::string text);
// Chat mode: joins `room`, prints its messages as they come, says every line typed on stdin;
// `/quit`, end of input or Ctrl-C leave the room and return. `/who` lists the members.
awaitable<void> chat_mode(Env env, std::string room, std::string nick);

}  // namespace coserve::cli
