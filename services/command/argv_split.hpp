#pragma once
// Splits a command line into argv with shell-like quoting and nothing else: no expansion, no
// globbing, no operators. `;`, `|`, `&&`, `$(...)`, backticks, `>` and `~` are ordinary
// characters, so `ls; rm -rf ~` becomes {"ls;", "rm", "-rf", "~"}.
//
//   blanks (space, tab, newline) separate words;
//   '...'  keeps everything up to the next ' literally;
//   "..."  keeps everything literally except \" \\ \$ \` (the backslash is dropped) and
//          \<newline> (both dropped);
//   \c     outside quotes keeps c literally; \<newline> is dropped;
//   ''/"" make an empty word.
// An unterminated quote or a trailing backslash is an error. Pure function, thread-safe.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coserve::command {

struct SplitResult {
  std::vector<std::string> argv;
  std::string error;  // empty on success
};

SplitResult split_command_line(std::string_view line);

}  // namespace coserve::command
