// The pieces of `command` that need no process: argv splitting, the program policy and the
// working-directory jail (lexical part and the kernel-checked open).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <fstream>

#include "command/argv_split.hpp"
#include "command/command.hpp"
#include "command/jail.hpp"
#include "command/policy.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace coserve::command;
using V = std::vector<std::string>;

namespace {
V split(std::string_view s) {
  auto r = split_command_line(s);
  INFO(s);
  REQUIRE(r.error.empty());
  return r.argv;
}
errc code_of(auto&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("expected a coserve::Error");
  return errc::internal;
}
}  // namespace

TEST_CASE("split: blanks, quotes and escapes, shell operators stay literal") {
  CHECK(split("ls -l  /tmp") == V{"ls", "-l", "/tmp"});
  CHECK(split("  ") == V{});
  CHECK(split("echo 'a b' \"c d\" e\\ f") == V{"echo", "a b", "c d", "e f"});
  CHECK(split("echo '' \"\"") == V{"echo", "", ""});
  CHECK(split("echo \"a\\\"b\\\\c\\$d\\`e\\nf\"") == V{"echo", "a\"b\\c$d`e\\nf"});
  CHECK(split("echo 'it''s'") == V{"echo", "its"});
  CHECK(split("ls; rm -rf ~") == V{"ls;", "rm", "-rf", "~"});
  CHECK(split("echo $(id) `id` && x || y | z > f < g &") ==
        V{"echo", "$(id)", "`id`", "&&", "x", "||", "y", "|", "z", ">", "f", "<", "g", "&"});
  CHECK(split("a\\\nb") == V{"ab"});
  CHECK_FALSE(split_command_line("echo 'open").error.empty());
  CHECK_FALSE(split_command_line("echo \"open").error.empty());
  CHECK_FALSE(split_command_line("echo \\").error.empty());
}

TEST_CASE("policy: allow-list by bare name, denied arguments, shell users") {
  Policy policy(CommandService::defaults());
  auto ls = policy.resolve({"ls", "-l"}, false);
  CHECK(ls.program.filename() == "ls");
  CHECK(ls.program.is_absolute());
  CHECK(ls.args == V{"-l"});
  CHECK(code_of([&] { policy.resolve({"rm", "-rf", "/"}, false); }) == errc::forbidden);
  CHECK(code_of([&] { policy.resolve({"/bin/ls"}, false); }) == errc::forbidden);
  CHECK(code_of([&] { policy.resolve({"ls;"}, false); }) == errc::forbidden);
  CHECK(code_of([&] { policy.resolve({"find", ".", "-exec", "rm", "{}", ";"}, false); }) ==
        errc::forbidden);
  CHECK(code_of([&] { policy.resolve({"env", "rm", "-rf", "/"}, false); }) == errc::forbidden);
  CHECK(code_of([&] { policy.resolve({"sort", "-ro", "x"}, false); }) == errc::forbidden);
  CHECK(code_of([&] { policy.resolve({"sort", "--output=x"}, false); }) == errc::forbidden);
  CHECK(policy.resolve({"sort", "-rn"}, false).args == V{"-rn"});
  CHECK(policy.resolve({"env"}, false).args.empty());
  CHECK(code_of([&] { policy.resolve({}, false); }) == errc::bad_request);
  // A shell user may run what is on PATH; a missing program is not_found.
  CHECK(policy.resolve({"rm", "--version"}, true).program.filename() == "rm");
  CHECK(code_of([&] { policy.resolve({"no-such-program-xyz"}, true); }) == errc::not_found);
  auto sh = policy.shell_line("echo hi");
  CHECK(sh.program == "/bin/sh");
  CHECK(sh.args == V{"-c", "echo hi"});
  try {
    policy.resolve({"python3"}, false);
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("python3") != std::string::npos);
  }
}

TEST_CASE("jail_join normalizes inside the home and refuses to climb out") {
  CHECK(jail_join("", "a/b") == "a/b");
  CHECK(jail_join("a", "b/../c") == "a/c");
  CHECK(jail_join("a/b", "/x") == "x");
  CHECK(jail_join("a/b", "..") == "a");
  CHECK(jail_join("a", "././/") == "a");
  CHECK(jail_join("a", "/") == "");
  CHECK(code_of([] { jail_join("", ".."); }) == errc::forbidden);
  CHECK(code_of([] { jail_join("a", "../../etc"); }) == errc::forbidden);
  CHECK(code_of([] { jail_join("", std::string("a\0b", 3)); }) == errc::bad_request);
}

TEST_CASE("open_jailed_dir lets the kernel refuse symlinks out of the home") {
  test::TempDir dir;
  auto home = dir.path() / "home";
  std::filesystem::create_directories(home / "sub");
  std::filesystem::create_directories(dir.path() / "outside");
  std::filesystem::create_directory_symlink(dir.path() / "outside", home / "out");
  std::filesystem::create_directory_symlink("sub", home / "in");
  std::ofstream(home / "file") << "x";
  ::close(open_jailed_dir(home, ""));
  ::close(open_jailed_dir(home, "sub"));
  ::close(open_jailed_dir(home, "in"));  // a symlink that stays inside is fine
  CHECK(code_of([&] { open_jailed_dir(home, "out"); }) == errc::forbidden);
  CHECK(code_of([&] { open_jailed_dir(home, "missing"); }) == errc::not_found);
  CHECK(code_of([&] { open_jailed_dir(home, "file"); }) == errc::bad_request);
  CHECK(code_of([&] { open_jailed_dir(dir.path() / "nohome", ""); }) == errc::not_found);
}
