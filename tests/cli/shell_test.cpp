// The shell: first as a script on stdin (`shell` subcommand), then interactively in a real
// terminal (tmux): hidden password, cd/ls, put with the progress bar, exec with Ctrl-C,
// history, chat mode.
#include <thread>

#include <catch2/catch.hpp>

#include "cli_support.hpp"
#include "coserve/client.hpp"

using namespace coserve;
using namespace coserve::cli_test;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::size_t count(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("cli shell: commands read from stdin", "[cli][shell]") {
  AliceServer server;
  test::TempDir local;
  write_random_file(local.path() / "f.bin", 100000);
  auto script = "login alice\nsecret\nwhoami\nmkdir d\ncd d\npwd\nput " +
                (local.path() / "f.bin").string() +
                "\nls\nexec pwd\ncd /\nget d/f.bin " + (local.path() / "back.bin").string() +
                "\ncd nowhere\npwd\necho it's \"quoted\"\nbogus\nquit\nwhoami\n";
  auto result = test::run_program({test::binary("coserve-cli").string(), "--port",
                                   server.port(), "shell"},
                                  script);
  INFO(result.out << "\n---\n" << result.err);
  CHECK(contains(result.out, "logged in as alice\nalice\n/d\n"));
  CHECK(contains(result.out, "put /d/f.bin"));
  CHECK(contains(result.out, "f.bin\n"));
  CHECK(contains(result.out, "/home/alice/d\n"));  // exec runs in the shell's directory (as the sandbox shows it)
  CHECK(sha256_hex(local.path() / "back.bin") == sha256_hex(local.path() / "f.bin"));
  CHECK(contains(result.err, "coserve-cli: not_found: "));
  CHECK(contains(result.out, "/\nit's \"quoted\"\n"));  // failed cd changed nothing
  CHECK(contains(result.err, "coserve-cli: unknown command 'bogus'"));
  CHECK(result.out.size() >= 14);
  CHECK(result.out.substr(result.out.size() - 14) == "it's \"quoted\"\n");  // nothing after quit
  CHECK(result.status == 2);                 // the last command failed as a usage error
}

TEST_CASE("cli shell: --user with --password-stdin, then commands", "[cli][shell]") {
  AliceServer server;
  auto result = test::run_program(server.argv({"shell"}), "secret\nwhoami\n");
  CHECK(result.status == 0);
  CHECK(result.out == "alice\n");
}

TEST_CASE("cli shell: interactive in a terminal", "[cli][shell][tty]") {
  if (!tmux_available()) {
    WARN("tmux is not installed: skipping the terminal test");
    return;
  }
  AliceServer server;
  test::TempDir local;
  write_random_file(local.path() / "movie.bin", 32 * 1024 * 1024);
  const auto port = server.port();
  Terminal term(test::binary("coserve-cli").string() + " --port " + port);
  term.wait_for("coserve 127.0.0.1:" + port + ":/> ");

  // The password is asked for without echo.
  term.line("login alice");
  term.wait_for("Password for alice: ");
  term.line(kPassword);
  auto shown = term.wait_for("logged in as alice");
  CHECK_FALSE(contains(shown, kPassword));

  term.line("mkdir docs");
  term.line("cd docs");
  term.wait_for("coserve alice@127.0.0.1:" + port + ":/docs> ");

  // The progress bar is drawn in place; its last state stays on screen.
  term.line("put " + (local.path() / "movie.bin").string());
  shown = term.wait_for("put /docs/movie.bin", 60s);
  CHECK(contains(shown, "[####################] 100%"));
  CHECK(contains(shown, "32 MiB / 32 MiB"));
  CHECK(contains(shown, "MiB/s"));
  CHECK(count(shown, "put movie.bin") == 1);  // one line, redrawn, not one per update

  term.line("ls");
  term.wait_for("movie.bin\n");

  // Ctrl-C cancels the remote command, not the client.
  term.line("exec sleep 29.25");
  REQUIRE(wait_until(
      [&] { return sleep_running("29.25"); },
      10s));
  term.keys({"C-c"});
  term.wait_for("coserve-cli: cancelled: ");
  CHECK(wait_until(
      [&] { return !sleep_running("29.25"); },
      5s));
  term.line("quota");
  term.wait_for("used ");
  // Ctrl-C at the prompt leaves the shell running with a fresh prompt; Up recalls the last
  // command. Up waits for that prompt, as a user would: keys typed while the line editor is
  // between two prompts reach a terminal in cooked mode.
  const std::string docs_prompt = "coserve alice@127.0.0.1:" + port + ":/docs>";
  std::size_t prompts = 0;
  auto at_new_prompt = [&] {
    auto screen = term.screen();
    screen.erase(screen.find_last_not_of(" \n") + 1);
    return screen.ends_with(docs_prompt) && count(screen, docs_prompt) > prompts;
  };
  if (!wait_until(at_new_prompt, 10s)) FAIL(term.screen());
  prompts = count(term.screen(), docs_prompt);
  term.keys({"C-c"});
  if (!wait_until(at_new_prompt, 10s)) FAIL(term.screen());
  term.keys({"Up", "Enter"});
  REQUIRE(wait_until([&] { return count(term.screen(), "used ") == 2; }, 10s));
  CHECK(term.alive());

  // Chat mode: pushes are printed, typed lines are said, /quit returns to the prompt.
  term.line("chat dev");
  term.wait_for("you are alice in dev");
  test::run([&]() -> awaitable<void> {
    Client bob(co_await asio::this_coro::executor);
    co_await bob.connect("127.0.0.1", port);
    json join = {{"service", "chat"}, {"op", "join"}, {"room", "dev"}, {"nick", "bob"}};
    auto joined = co_await bob.call(join);
    REQUIRE_FALSE(error_code_of(joined));
    json say = {{"service", "chat"}, {"op", "say"}, {"room", "dev"}, {"text", "hi from bob"}};
    co_await bob.call(say);
    term.wait_for("[dev] bob: hi from bob");
    term.line("hello bob");
    std::string heard;
    while (heard.empty()) {
      auto push = co_await bob.next_push();
      if (push.head.value("event", "") == "message" && push.head.value("from", "") == "alice")
        heard = push.head.value("text", "");
    }
    CHECK(heard == "hello bob");
  }());
  term.line("/quit");
  term.wait_for("* left dev");
  term.line("pwd");
  term.wait_for("/docs\n");
  term.line("quit");
  term.wait_for("[exited 0]");
}

TEST_CASE("cli shell: reconnects and logs in again after an idle timeout", "[cli][shell][tty]") {
  if (!tmux_available()) {
    WARN("tmux is not installed: skipping the terminal test");
    return;
  }
  AliceServer server({"--set", "limits.idle_timeout_ms=300"});
  fs::create_directory(server.home() / "d");
  Terminal term("env COSERVE_PASSWORD=secret " + test::binary("coserve-cli").string() +
                " --port " + server.port() + " --user alice");
  term.wait_for("coserve alice@127.0.0.1:" + server.port() + ":/> ");
  term.line("cd d");
  term.wait_for(":/d> ");
  std::this_thread::sleep_for(800ms);  // the server closes the idle connection
  term.line("pwd");
  auto shown = term.wait_for("/d\n");
  CHECK(contains(shown, "coserve-cli: reconnecting to 127.0.0.1:" + server.port()));
  term.line("whoami");
  term.wait_for("\nalice\n");
}
