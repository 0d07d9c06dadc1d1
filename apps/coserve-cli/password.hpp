#pragma once
// Where a password comes from (DESIGN.md §9): `--password-stdin` (first line of stdin), the
// environment variable COSERVE_PASSWORD, or a prompt on the terminal without echo.
#include <string>

namespace coserve::cli {

// Prompts on /dev/tty with echo off. Throws Failure(kUsage) when there is no terminal, and
// Failure(kServerError, "cancelled: ...") on Ctrl-C (the terminal is restored either way).
std::string prompt_password(const std::string& prompt);

// The first line of stdin, read byte by byte so nothing after it is consumed.
std::string read_stdin_line();

// --password-stdin, else COSERVE_PASSWORD, else the prompt.
std::string obtain_password(const std::string& user, bool from_stdin);

}  // namespace coserve::cli
