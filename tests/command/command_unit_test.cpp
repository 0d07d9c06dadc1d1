// The pieces of `command` that need no process: argv splitting, the program policy and the
// sandbox's view of the host. (Its working directory goes through the shared jail, tested with
// the files service's corpus in tests/files.)
#include <catch2/catch.hpp>

#include <pwd.h>
#include <unistd.h>

#include <fstream>

#include "command/argv_split.hpp"
#include "command/command.hpp"
#include "command/policy.hpp"
#include "command/sandbox.hpp"
#include "coserve/config.hpp"
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
  // getopt takes any unique prefix of a long option: `sort --co=sh` ran a shell once.
  for (auto spelled : {"--compress-program=sh", "--compress-program", "--compress=sh", "--co=sh",
                       "--c", "--compress-prog"}) {
    INFO(spelled);
    CHECK(code_of([&] { policy.resolve({"sort", spelled, "x"}, false); }) == errc::forbidden);
  }
  // Writing files is the sandbox's business (the home only), not the policy's.
  CHECK(policy.resolve({"sort", "-o", "out.txt", "in.txt"}, false).args.size() == 3);
  CHECK(policy.resolve({"sort", "--output=out.txt"}, false).args == V{"--output=out.txt"});
  CHECK(policy.resolve({"sort", "-rn"}, false).args == V{"-rn"});
  CHECK(policy.resolve({"sort", "--"}, false).args == V{"--"});
  CHECK(code_of([&] { policy.resolve({"find", ".", "-execdir", "sh", ";"}, false); }) ==
        errc::forbidden);
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

namespace {
// The index of `word` in argv, or npos.
std::size_t find_word(const V& argv, const std::string& word, std::size_t from = 0) {
  for (std::size_t i = from; i < argv.size(); ++i)
    if (argv[i] == word) return i;
  return std::string::npos;
}
bool has_sequence(const V& argv, const V& seq) {
  for (std::size_t i = 0; i + seq.size() <= argv.size(); ++i)
    if (std::equal(seq.begin(), seq.end(), argv.begin() + static_cast<std::ptrdiff_t>(i))) return true;
  return false;
}
}  // namespace

TEST_CASE("sandbox: bubblewrap shows the home, the system read-only and nothing else") {
  test::TempDir dir;
  auto settings_json = CommandService::defaults();
  auto sandbox = Sandbox(SandboxSettings::from(settings_json, false));
  REQUIRE(sandbox.enabled());
  SandboxedRun run{dir.path() / "homes" / "bob", "bob", "/src/lib"};
  auto argv = sandbox.wrap("/usr/bin/ls", {"-l", "x"}, run);
  CHECK(argv.front() == "/usr/bin/bwrap");
  CHECK(find_word(argv, "--unshare-all") != std::string::npos);
  CHECK(find_word(argv, "--disable-userns") != std::string::npos);
  CHECK(find_word(argv, "--cap-add") == std::string::npos);
  CHECK(find_word(argv, "--share-net") == std::string::npos);
  CHECK(find_word(argv, "--die-with-parent") != std::string::npos);
  CHECK(has_sequence(argv, {"--bind", run.home.string(), "/home/bob"}));
  CHECK(has_sequence(argv, {"--chdir", "/home/bob/src/lib"}));
  CHECK(has_sequence(argv, {"--proc", "/proc"}));
  CHECK(has_sequence(argv, {"--perms", "1777", "--size", "67108864", "--tmpfs", "/tmp"}));
  CHECK(has_sequence(argv, {"--perms", "0755", "--dir", "/etc"}));
  CHECK(has_sequence(argv, {"--", "/usr/bin/ls", "-l", "x"}));
  CHECK(has_sequence(argv, {"--ro-bind", "/usr", "/usr"}));
  // The only read-write bind is the home; nothing of /etc beyond the listed files.
  std::size_t binds = 0;
  for (std::size_t i = find_word(argv, "--bind"); i != std::string::npos; i = find_word(argv, "--bind", i + 1))
    ++binds;
  CHECK(binds == 1);
  for (auto i = find_word(argv, "/etc"); i != std::string::npos; i = find_word(argv, "/etc", i + 1))
    CHECK(argv[i - 1] == "--dir");  // an empty directory for the listed files, never bound whole
  CHECK(find_word(argv, "/etc/shadow") == std::string::npos);
  CHECK(find_word(argv, dir.path().string()) == std::string::npos);
  if (std::filesystem::is_symlink("/bin"))
    CHECK(has_sequence(argv, {"--symlink", std::filesystem::read_symlink("/bin").string(), "/bin"}));
  CHECK(sandbox.inner_home(run) == "/home/bob");
  CHECK(sandbox.inner_cwd(run) == "/home/bob/src/lib");

  // A root server: bwrap as root, then setpriv becomes run_as before the program starts.
  auto as_root = Sandbox(SandboxSettings::from(settings_json, true)).wrap("/usr/bin/ls", {"-l"}, run);
  CHECK(find_word(as_root, "--unshare-net") != std::string::npos);
  CHECK(find_word(as_root, "--unshare-user") == std::string::npos);
  CHECK(has_sequence(as_root, {"--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"}));
  auto nobody = std::to_string(::getpwnam("nobody")->pw_uid);
  CHECK(has_sequence(as_root, {"--", "/usr/bin/setpriv", "--reuid", nobody}));
  CHECK(has_sequence(as_root, {"--bounding-set=-all", "--", "/usr/bin/ls", "-l"}));

  // A container whose /proc is masked: an empty /proc, nested user namespaces not forbidden.
  auto masked = CommandService::defaults();
  masked["sandbox_proc"] = false;
  masked["sandbox_disable_userns"] = false;
  auto in_container = Sandbox(SandboxSettings::from(masked, false)).wrap("/usr/bin/ls", {}, run);
  CHECK(find_word(in_container, "--proc") == std::string::npos);
  CHECK(has_sequence(in_container, {"--dir", "/proc"}));
  CHECK(find_word(in_container, "--disable-userns") == std::string::npos);

  settings_json["sandbox_network"] = true;
  CHECK(find_word(Sandbox(SandboxSettings::from(settings_json, false)).wrap("/usr/bin/ls", {}, run),
                  "--share-net") != std::string::npos);
  CHECK(find_word(Sandbox(SandboxSettings::from(settings_json, true)).wrap("/usr/bin/ls", {}, run),
                  "--unshare-net") == std::string::npos);
  settings_json["sandbox"] = "none";
  Sandbox none(SandboxSettings::from(settings_json, false));
  CHECK_FALSE(none.enabled());
  CHECK(none.wrap("/usr/bin/ls", {"-l"}, run) == V{"/usr/bin/ls", "-l"});
  CHECK(none.inner_cwd(run) == (run.home.string() + "/src/lib"));

  for (auto bad : {R"({"sandbox": "chroot"})", R"({"sandbox_ro_paths": ["usr"]})",
                   R"({"sandbox_ro_paths": ["/usr/../etc"]})", R"({"sandbox_ro_paths": ["/"]})",
                   R"({"sandbox_tmp_bytes": 0})"}) {
    INFO(bad);
    auto s = CommandService::defaults();
    s.update(json::parse(bad));
    CHECK_THROWS_AS(SandboxSettings::from(s, false), ConfigError);
  }
  auto root_user = CommandService::defaults();
  root_user["run_as"] = "root";
  CHECK_THROWS_AS(SandboxSettings::from(root_user, true), ConfigError);
  root_user["run_as"] = "no-such-user-xyz";
  CHECK_THROWS_AS(SandboxSettings::from(root_user, true), ConfigError);
  CHECK_NOTHROW(SandboxSettings::from(root_user, false));  // unused when not root
}
