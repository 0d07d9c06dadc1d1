#include "command/argv_split.hpp"

namespace coserve::command {

SplitResult split_command_line(std::string_view line) {
  SplitResult out;
  std::string word;
  bool in_word = false;  // a word is open (even if empty, after '' or "")
  std::size_t i = 0;
  auto finish = [&] {
    if (in_word) out.argv.push_back(std::move(word));
    word.clear();
    in_word = false;
  };
  while (i < line.size()) {
    char c = line[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      finish();
      ++i;
    } else if (c == '\'') {
      auto end = line.find('\'', i + 1);
      if (end == std::string_view::npos) {
        out.error = "unterminated single quote";
        return out;
      }
      word.append(line.substr(i + 1, end - i - 1));
      in_word = true;
      i = end + 1;
    } else if (c == '"') {
      in_word = true;
      ++i;
      bool closed = false;
      while (i < line.size()) {
        char d = line[i];
        if (d == '"') {
          closed = true;
          ++i;
          break;
        }
        if (d == '\\' && i + 1 < line.size()) {
          char e = line[i + 1];
          if (e == '"' || e == '\\' || e == '$' || e == '`') {
            word.push_back(e);
            i += 2;
            continue;
          }
          if (e == '\n') {
            i += 2;
            continue;
          }
        }
        word.push_back(d);
        ++i;
      }
      if (!closed) {
        out.error = "unterminated double quote";
        return out;
      }
    } else if (c == '\\') {
      if (i + 1 >= line.size()) {
        out.error = "trailing backslash";
        return out;
      }
      if (line[i + 1] != '\n') {
        word.push_back(line[i + 1]);
        in_word = true;
      }
      i += 2;
    } else {
      word.push_back(c);
      in_word = true;
      ++i;
    }
  }
  finish();
  return out;
}

}  // namespace coserve::command
