// `command` against the real server: streaming, cancel, timeout, exit codes and signals, cd/pwd,
// injection attempts under the default policy, and no orphans after a disconnect.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>

#include <fstream>
#include <set>
#include <sstream>

#include "command_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace std::chrono_literals;

namespace {

// Process ids whose process group is `pgid` (from /proc/<pid>/stat).
std::set<pid_t> group_members(pid_t pgid) {
  std::set<pid_t> out;
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  while (auto* e = ::readdir(proc.get())) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    std::string state;
    pid_t ppid = 0, pgrp = 0;
    rest >> state >> ppid >> pgrp;
    if (pgrp == pgid) out.insert(pid);
  }
  return out;
}

awaitable<bool> group_gone_within(pid_t pgid, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (group_members(pgid).empty()) co_return true;
    co_await test::sleep_for(20ms);
  }
  co_return false;
}

}  // namespace

TEST_CASE("multi-MiB output arrives complete and in order, no-output commands still reply") {
  Fixture f;
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto r = co_await run_cmd(c, "argv", args("seq", "1", "700000"));
    std::string expected;
    for (int i = 1; i <= 700000; ++i) expected += std::to_string(i) + "\n";
    CHECK(expected.size() > 4 * 1024 * 1024);
    CHECK(r.out.size() == expected.size());
    CHECK(r.out == expected);
    CHECK(r.reply["ok"] == true);
    CHECK(r.reply["exit_code"] == 0);
    CHECK(r.reply["duration_ms"].is_number());
    CHECK_FALSE(r.reply.contains("truncated"));

    auto quiet = co_await run_cmd(c, "argv", args("true"));
    CHECK(quiet.reply["ok"] == true);
    CHECK(quiet.reply["exit_code"] == 0);
    CHECK(quiet.out.empty());

    auto in = co_await run_cmd(c, "argv", args("wc", "-c"), "stdin", "hello");
    CHECK(in.out == "5\n");
    auto err = co_await run_cmd(c, "line", "ls /no/such/dir");
    CHECK(err.reply["exit_code"] == 2);
    CHECK(err.err.find("/no/such/dir") != std::string::npos);
  }());
}

TEST_CASE("an output cap ends the command with truncated") {
  Fixture f({"--set", "services.command.max_output_bytes=100000"});
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto r = co_await run_cmd(c, "argv", args("yes"));
    CHECK(r.out.size() == 100000);
    CHECK(r.reply["truncated"] == true);
    CHECK(r.reply["signal"] == SIGKILL);
    REQUIRE(r.pid);
    auto awaited12 = co_await group_gone_within(*r.pid, 5s);
    CHECK(awaited12);
  }());
}

TEST_CASE("a never-ending command streams until cancelled, then its group is gone") {
  Fixture f;
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto stream = c.open(cmd("run", "argv", args("yes", "coserve")));
    auto started = co_await stream.next();
    REQUIRE(started.head["event"] == "started");
    pid_t pid = started.head["pid"];
    std::size_t bytes = 0;
    while (bytes < 2 * 1024 * 1024) {
      auto e = co_await stream.next();
      REQUIRE(e.head["event"] == "stdout");
      CHECK(e.body.substr(0, 8) == "coserve\n");
      bytes += e.body.size();
    }
    json cancel = cmd("cancel", "target", stream.id());
    auto cancelled = co_await c.call(cancel);
    CHECK(cancelled.head["ok"] == true);
    Frame last;
    do last = co_await stream.next();
    while (!stream.done());
    CHECK(error_code_of(last) == "cancelled");
    auto awaited13 = co_await group_gone_within(pid, 5s);
    CHECK(awaited13);
    json again = cmd("cancel", "target", stream.id());
    auto awaited14 = co_await c.call(again);
    CHECK(error_code_of(awaited14) == "not_found");
  }());
}

TEST_CASE("timeout kills the command and replies timeout") {
  Fixture f;
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto start = std::chrono::steady_clock::now();
    auto r = co_await run_cmd(c, "argv", args("sleep", "30"), "timeout_ms", 300);
    CHECK(error_code_of(Frame{r.reply, {}}) == "timeout");
    CHECK(std::chrono::steady_clock::now() - start < 10s);
    REQUIRE(r.pid);
    auto awaited15 = co_await group_gone_within(*r.pid, 5s);
    CHECK(awaited15);
    auto bad = co_await run_cmd(c, "argv", args("true"), "timeout_ms", 0);
    CHECK(error_code_of(Frame{bad.reply, {}}) == "bad_request");
  }());
}

TEST_CASE("exit codes and signals") {
  Fixture f;
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto no = co_await run_cmd(c, "argv", args("false"));
    CHECK(no.reply["exit_code"] == 1);
    auto stream = c.open(cmd("run", "argv", args("sleep", "30")));
    auto started = co_await stream.next();
    ::kill(started.head["pid"].get<pid_t>(), SIGTERM);
    auto end = co_await stream.next();
    REQUIRE(stream.done());
    CHECK(end.head["signal"] == SIGTERM);
    CHECK(end.head["signal_name"] == "TERM");
    CHECK_FALSE(end.head.contains("exit_code"));

    Client s(co_await asio::this_coro::executor);
    co_await s.connect("127.0.0.1", f.server->port("framed"));
    co_await login(s, "shelly");
    auto shell = co_await run_cmd(s, "line", "echo out; echo err >&2; exit 7");
    CHECK(shell.out == "out\n");
    CHECK(shell.err == "err\n");
    CHECK(shell.reply["exit_code"] == 7);
    // Inside the sandbox a program's death by signal reaches us as the sandbox's exit status,
    // 128 + N, the way a shell reports it (docs/protocol.md).
    auto self_kill = co_await run_cmd(s, "line", "kill -SEGV $$");
    CHECK(self_kill.reply["exit_code"] == 128 + SIGSEGV);
  }());
}

TEST_CASE("cd then pwd, inside the home only") {
  Fixture f;
  std::filesystem::create_directories(f.home("bob") / "sub" / "deeper");
  std::filesystem::create_directory_symlink("/tmp", f.home("bob") / "escape");
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto pwd0 = co_await c.call(cmd("pwd"));
    CHECK(pwd0.head["cwd"] == "/");
    auto cd = co_await c.call(cmd("cd", "path", "sub"));
    CHECK(cd.head["ok"] == true);
    CHECK(cd.head["cwd"] == "/sub");
    auto cd2 = co_await c.call(cmd("cd", "path", "deeper/.."));
    CHECK(cd2.head["cwd"] == "/sub");
    auto awaited16 = co_await c.call(cmd("pwd"));
    CHECK(awaited16.head["cwd"] == "/sub");
    auto real = co_await run_cmd(c, "argv", args("pwd"));
    CHECK(real.out == "/home/bob/sub\n");  // the home as the sandbox shows it
    auto awaited17 = co_await c.call(cmd("cd", "path", "../.."));
    CHECK(error_code_of(awaited17) == "forbidden");
    auto awaited18 = co_await c.call(cmd("cd", "path", "/escape"));
    CHECK(error_code_of(awaited18) == "forbidden");
    auto awaited19 = co_await c.call(cmd("cd", "path", "missing"));
    CHECK(error_code_of(awaited19) == "not_found");
    auto awaited20 = co_await c.call(cmd("pwd"));
    CHECK(awaited20.head["cwd"] == "/sub");  // failures change nothing
    auto home = co_await c.call(cmd("cd", "path", "/"));
    CHECK(home.head["cwd"] == "/");
  }());
}

TEST_CASE("injection attempts run nothing but the allowed program with literal arguments") {
  Fixture f;
  auto canary = f.home("bob") / "canary";
  std::ofstream(canary) << "alive";
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto semi = co_await run_cmd(c, "line", "ls; rm -rf ~");
    CHECK(error_code_of(Frame{semi.reply, {}}) == "forbidden");
    CHECK(semi.reply["error"]["message"].get<std::string>().find("'ls;'") != std::string::npos);
    CHECK_FALSE(semi.pid);

    auto literal = co_await run_cmd(c, "line", "echo $(rm -rf ~) `rm -rf ~` && rm -rf ~ | x > y");
    CHECK(literal.reply["exit_code"] == 0);
    CHECK(literal.out == "$(rm -rf ~) `rm -rf ~` && rm -rf ~ | x > y\n");

    auto spaced = co_await run_cmd(c, "line", "ls ; rm -rf canary");
    CHECK(spaced.reply["exit_code"] != 0);  // ls of the files ";", "rm", "-rf": not found
    auto argv = co_await run_cmd(c, "argv", args("sh", "-c", "rm -rf ~"));
    CHECK(error_code_of(Frame{argv.reply, {}}) == "forbidden");
    CHECK(argv.reply["error"]["message"].get<std::string>().find("'sh'") != std::string::npos);
    auto find = co_await run_cmd(c, "line", "find . -exec rm -rf {} ;");
    CHECK(error_code_of(Frame{find.reply, {}}) == "forbidden");
    auto env = co_await run_cmd(c, "line", "env rm -rf ~");
    CHECK(error_code_of(Frame{env.reply, {}}) == "forbidden");
    auto path = co_await run_cmd(c, "argv", args("/bin/rm", "-rf", "/"));
    CHECK(error_code_of(Frame{path.reply, {}}) == "forbidden");

    std::ifstream check(canary);
    std::string content;
    check >> content;
    CHECK(content == "alive");
    // The environment is clean: nothing of the server's leaks through.
    auto e = co_await run_cmd(c, "argv", args("env"));
    CHECK(e.out.find("HOME=") != std::string::npos);
    CHECK(e.out.find("COSERVE") == std::string::npos);
  }());
}

TEST_CASE("a disconnect kills the whole process group: no orphans left") {
  Fixture f;
  test::run([&]() -> awaitable<void> {
    pid_t pgid = 0;
    {
      Client c(co_await asio::this_coro::executor);
      co_await c.connect("127.0.0.1", f.server->port("framed"));
      co_await login(c, "shelly");
      // A shell with a background child and a foreground child, one group with the sandbox's
      // own two processes (its monitor and the init of its PID namespace).
      auto stream = c.open(cmd("run", "line", "sleep 300 & sleep 301; echo never"));
      auto started = co_await stream.next();
      pgid = started.head["pid"];
      for (int i = 0; i < 200 && group_members(pgid).size() < 5; ++i)
        co_await test::sleep_for(10ms);
      REQUIRE(group_members(pgid).size() >= 3);
      c.close();
    }
    auto awaited21 = co_await group_gone_within(pgid, 5s);
    CHECK(awaited21);
  }());
}
