// One-shot subcommands: their output and the stable exit codes (0 ok, 1 server error with its
// code, 2 usage, 3 connection failure).
#include <signal.h>

#include <fstream>

#include <catch2/catch.hpp>

#include "cli_support.hpp"
#include "coserve/client.hpp"

using namespace coserve;
using namespace coserve::cli_test;

namespace {
bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}
}  // namespace

TEST_CASE("cli: login sources, whoami and login errors", "[cli]") {
  AliceServer server;
  auto me = server.cli({"whoami"});
  INFO(me.err);
  CHECK(me.status == 0);
  CHECK(me.out == "alice\n");

  CHECK(server.cli({"whoami"}, false).out == "(anonymous)\n");

  // COSERVE_PASSWORD through env(1), so the test does not change its own environment.
  auto from_env = test::run_program({"/usr/bin/env", "COSERVE_PASSWORD=secret",
                                     test::binary("coserve-cli").string(), "--port",
                                     server.port(), "--user", "alice", "whoami"});
  CHECK(from_env.status == 0);
  CHECK(from_env.out == "alice\n");

  auto wrong = test::run_program(server.argv({"whoami"}), "wrong\n");
  CHECK(wrong.status == 1);
  CHECK(contains(wrong.err, "coserve-cli: unauthenticated: "));
  CHECK(wrong.out.empty());

  // No terminal and no password source: a usage error, not a hang.
  auto none = test::run_program({test::binary("coserve-cli").string(), "--port", server.port(),
                                 "--user", "alice", "whoami"});
  CHECK(none.status == 2);
}

TEST_CASE("cli: files subcommands print results and map server errors to exit 1", "[cli]") {
  AliceServer server;
  std::ofstream(server.home() / "notes.txt") << "hello notes\n";

  auto made = server.cli({"mkdir", "docs"});
  CHECK(made.status == 0);
  auto again = server.cli({"mkdir", "docs"});
  CHECK(again.status == 1);
  CHECK(contains(again.err, "coserve-cli: exists: "));
  CHECK(server.cli({"mkdir", "-p", "a/b/c"}).status == 0);
  CHECK(fs::is_directory(server.home() / "a" / "b" / "c"));

  auto listing = server.cli({"ls"});
  INFO(listing.out << listing.err);
  CHECK(listing.status == 0);
  CHECK(contains(listing.out, "docs/"));
  CHECK(contains(listing.out, "notes.txt"));
  CHECK(contains(listing.out, "12 B"));
  CHECK(contains(listing.out, "file"));
  CHECK(contains(listing.out, "dir"));

  CHECK(server.cli({"mv", "notes.txt", "docs/n.txt"}).status == 0);
  CHECK(fs::exists(server.home() / "docs" / "n.txt"));
  auto in_docs = server.cli({"ls", "/docs"});
  CHECK(contains(in_docs.out, "n.txt"));

  auto not_empty = server.cli({"rm", "docs"});
  CHECK(not_empty.status == 1);
  CHECK(contains(not_empty.err, "coserve-cli: not_empty: "));
  auto removed = server.cli({"rm", "-r", "docs"});
  CHECK(removed.status == 0);
  CHECK(contains(removed.out, "removed /docs"));
  CHECK_FALSE(fs::exists(server.home() / "docs"));

  auto missing = server.cli({"ls", "nowhere"});
  CHECK(missing.status == 1);
  CHECK(contains(missing.err, "coserve-cli: not_found: "));

  auto quota = server.cli({"quota"});
  CHECK(quota.status == 0);
  CHECK(contains(quota.out, "used "));

  auto anonymous = server.cli({"ls"}, false);
  CHECK(anonymous.status == 1);
  CHECK(contains(anonymous.err, "coserve-cli: unauthenticated: "));
}

TEST_CASE("cli: exec streams output and reports a failing command", "[cli]") {
  AliceServer server;
  auto hi = server.cli({"exec", "echo", "hi", "there"});
  CHECK(hi.status == 0);
  CHECK(hi.out == "hi there\n");

  // Options after the program name belong to the program, not to coserve-cli.
  std::ofstream(server.home() / "x.txt") << "1\n2\n3\n";
  auto lines = server.cli({"exec", "wc", "-l", "x.txt"});
  CHECK(lines.status == 0);
  CHECK(contains(lines.out, "3 x.txt"));

  auto stderr_output = server.cli({"exec", "ls", "no-such-file"});
  CHECK(stderr_output.status == 1);
  CHECK(contains(stderr_output.err, "no-such-file"));
  CHECK(contains(stderr_output.err, "coserve-cli: the command exited with code 2"));

  auto failing = server.cli({"exec", "false"});
  CHECK(failing.status == 1);
  CHECK(contains(failing.err, "exited with code 1"));

  auto refused = server.cli({"exec", "rm", "-rf", "x.txt"});
  CHECK(refused.status == 1);
  CHECK(contains(refused.err, "coserve-cli: forbidden: "));
  CHECK(fs::exists(server.home() / "x.txt"));
}

TEST_CASE("cli: exec is cancelled on the server by Ctrl-C", "[cli]") {
  AliceServer server;
  Background running(server.argv({"exec", "sleep", "29.75"}), "secret\n");
  // Wait until the program runs (the server logs nothing per command: poll its process list).
  REQUIRE(wait_until(
      [&] { return sleep_running("29.75"); }, 10s));
  running.signal(SIGINT);
  int status = running.wait(10s);
  INFO(running.err());
  CHECK(status == 1);
  CHECK(contains(running.err(), "coserve-cli: cancelled: "));
  CHECK(wait_until(
      [&] { return !sleep_running("29.75"); }, 5s));
}

TEST_CASE("cli: chat --room --say reaches the room's members", "[cli]") {
  AliceServer server;
  test::run([&]() -> awaitable<void> {
    Client bob(co_await asio::this_coro::executor);
    co_await bob.connect("127.0.0.1", server.port());
    json join = {{"service", "chat"}, {"op", "join"}, {"room", "dev"}, {"nick", "bob"}};
    auto joined = co_await bob.call(join);
    REQUIRE_FALSE(error_code_of(joined));
    // The CLI runs to completion here; bob's pushes wait in his socket meanwhile.
    auto said = server.cli({"chat", "--room", "dev", "--say", "hello bob"});
    CHECK(said.status == 0);
    auto anonymous = server.cli({"chat", "--room", "dev", "--nick", "carol", "--say", "hi"},
                                false);
    CHECK(anonymous.status == 0);
    std::vector<std::string> texts;
    while (texts.size() < 2) {
      auto push = co_await bob.next_push();
      if (push.head.value("event", "") == "message")
        texts.push_back(push.head.value("from", "") + ": " + push.head.value("text", ""));
    }
    CHECK(texts == std::vector<std::string>{"alice: hello bob", "carol: hi"});

    // Without --say: chat mode on stdin (here a file); bob's messages would be printed.
    auto mode = test::run_program(
        server.argv({"chat", "--room", "dev", "--nick", "dave"}, false),
        "line one\n/who\nline two\n/quit\nnot said\n");
    INFO(mode.out << mode.err);
    CHECK(mode.status == 0);
    CHECK(contains(mode.out, "* you are dave in dev"));
    CHECK(contains(mode.out, "[dev] dave: line one"));
    CHECK(contains(mode.out, "\"bob\""));
    CHECK(contains(mode.out, "* left dev"));
    texts.clear();
    while (texts.size() < 2) {
      auto push = co_await bob.next_push();
      if (push.head.value("event", "") == "message")
        texts.push_back(push.head.value("from", "") + ": " + push.head.value("text", ""));
    }
    CHECK(texts == std::vector<std::string>{"dave: line one", "dave: line two"});
  }());
  auto taken = server.cli({"chat", "--room", "dev", "--nick", "alice", "--say", "x"}, false);
  CHECK(taken.status == 1);
  CHECK(contains(taken.err, "coserve-cli: forbidden: "));
}

TEST_CASE("cli: usage errors exit 2, connection failures exit 3", "[cli]") {
  auto cli = test::binary("coserve-cli").string();
  CHECK(test::run_program({cli, "ls", "a", "b"}).status == 2);
  CHECK(test::run_program({cli, "exec"}).status == 2);
  CHECK(test::run_program({cli, "mv", "a"}).status == 2);
  CHECK(test::run_program({cli, "chat", "--say", "x"}).status == 2);
  auto tls = test::run_program({cli, "--tls", "hello"});
  CHECK(tls.status == 3);
  CHECK(contains(tls.err, "TLS"));
  CHECK(test::run_program({cli, "login"}).status == 2);
  auto refused = test::run_program({cli, "--port", "1", "ls"});
  CHECK(refused.status == 3);
  CHECK(contains(refused.err, "coserve-cli: cannot connect to 127.0.0.1:1"));

  // The server going away mid-session is a connection failure too.
  AliceServer server;
  Background running(server.argv({"exec", "sleep", "29.5"}), "secret\n");
  REQUIRE(wait_until(
      [&] { return sleep_running("29.5"); }, 10s));
  server.server().kill9();
  CHECK(running.wait(10s) == 3);
  CHECK(contains(running.err(), "connection lost"));
  // The killed server left its child behind: end it by its pid.
  if (auto orphan = sleep_pid("29.5")) ::kill(*orphan, SIGKILL);
}
