#include "words.hpp"

namespace coserve::cli {

std::vector<std::string> split_words(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote) {
      if (c == quote) quote = 0;
      else if (c == '\\' && quote == '"' && i + 1 < line.size()) word += line[++i];
      else word += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

std::string rest_of_line(const std::string& line) {
  auto start = line.find_first_not_of(" \t");
  auto gap = line.find_first_of(" \t", start);
  if (gap == std::string::npos) return {};
  auto rest = line.find_first_not_of(" \t", gap);
  return rest == std::string::npos ? std::string() : line.substr(rest);
}

}  // namespace coserve::cli
