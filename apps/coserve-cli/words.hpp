#pragma once
// Splitting the shell's command lines. Plain functions, tested without a server.
#include <string>
#include <vector>

namespace coserve::cli {

// Words separated by blanks; '...' and "..." group (a backslash escapes inside "..."), a
// backslash outside quotes escapes the next character. An unclosed quote runs to the end.
std::vector<std::string> split_words(const std::string& line);

// The raw text after the first word: exec and echo keep their quoting for the server.
std::string rest_of_line(const std::string& line);

}  // namespace coserve::cli
