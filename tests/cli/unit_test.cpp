// The CLI's plain functions: the shell's word splitting and the human-readable formats.
#include <catch2/catch.hpp>

#include "format.hpp"
#include "words.hpp"

using namespace coserve;
using namespace coserve::cli;
using Words = std::vector<std::string>;

TEST_CASE("cli: split_words groups quotes and escapes", "[cli][unit]") {
  CHECK(split_words("") == Words{});
  CHECK(split_words("  ls  \t docs ") == Words{"ls", "docs"});
  CHECK(split_words("put 'my file.txt' \"b c\"") == Words{"put", "my file.txt", "b c"});
  CHECK(split_words(R"(put my\ file "say \"hi\"" 'a\b')") ==
        Words{"put", "my file", "say \"hi\"", "a\\b"});
  CHECK(split_words("rm ''") == Words{"rm", ""});
  CHECK(split_words("a'b c'd") == Words{"ab cd"});
  CHECK(split_words("cd 'unclosed dir") == Words{"cd", "unclosed dir"});
}

TEST_CASE("cli: rest_of_line keeps the raw text after the command", "[cli][unit]") {
  CHECK(rest_of_line("exec ls -l 'a b'") == "ls -l 'a b'");
  CHECK(rest_of_line("  echo   two  spaces") == "two  spaces");
  CHECK(rest_of_line("exec") == "");
  CHECK(rest_of_line("exec   ") == "");
  CHECK(rest_of_line("   ") == "");
}

TEST_CASE("cli: human sizes and durations", "[cli][unit]") {
  CHECK(human_size(0) == "0 B");
  CHECK(human_size(1023) == "1023 B");
  CHECK(human_size(1024) == "1.0 KiB");
  CHECK(human_size(1536) == "1.5 KiB");
  CHECK(human_size(64ull << 20) == "64 MiB");
  CHECK(human_size(5ull << 40) == "5.0 TiB");
  CHECK(human_duration(std::chrono::seconds(7)) == "0:07");
  CHECK(human_duration(std::chrono::seconds(723)) == "12:03");
  CHECK(human_duration(std::chrono::seconds(3723)) == "1:02:03");
  CHECK(human_duration(std::chrono::seconds(-5)) == "0:00");
}

TEST_CASE("cli: format_listing prints type, size, mtime and name", "[cli][unit]") {
  json reply = {{"entries",
                 {{{"name", "docs"}, {"type", "dir"}, {"size", 0}, {"mtime", 0}},
                  {{"name", "a.bin"}, {"type", "file"}, {"size", 2048}, {"mtime", 0}}}},
                {"truncated", true}};
  auto text = format_listing(reply);
  auto stamp = local_time(0);
  CHECK(text == "dir              -  " + stamp + "  docs/\n" + "file       2.0 KiB  " + stamp +
                    "  a.bin\n(listing truncated by the server)\n");
  CHECK(format_listing(json::object()).empty());
}
