// The command sandbox against the real server, as an outside review attacked it: every way to
// read or write outside the home fails for a plain user and for a shell user, the quota binds
// what a program writes, the server's secrets stay out of reach, and normal work still works.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "command_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace std::chrono_literals;

namespace {

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void spit(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << text;
}

// The run did not succeed: refused by the policy, or ran and failed.
bool failed(const RunResult& r) {
  return r.reply.value("ok", true) == false || r.reply.value("exit_code", 0) != 0 ||
         r.reply.contains("signal");
}

const std::string kSecret = "TOP-SECRET-7f3a";

}  // namespace

TEST_CASE("sandbox: nothing outside the home can be read or written, by any user") {
  // The server's secret in its environment: it must not stay readable in /proc.
  ::setenv("COSERVE_ADMIN_PASSWORD", "env-secret-9c1e", 1);
  Fixture f;
  ::unsetenv("COSERVE_ADMIN_PASSWORD");
  const auto data = std::filesystem::canonical(f.dir.path());
  spit(f.home("bob") / "notes.txt", "pear\napple\nfig\n");
  spit(f.home("shelly") / "private.txt", kSecret);
  spit(data / "tls" / "server.key", kSecret);
  spit(data / "outside.txt", kSecret);
  const auto users_json = slurp(data / "users.json");
  const auto server_pid = std::to_string(f.server->pid());

  // The server's own environment no longer holds the secret it was given.
  CHECK(slurp("/proc/" + server_pid + "/environ").find("env-secret-9c1e") == std::string::npos);

  test::run([&]() -> awaitable<void> {
    Client bob(co_await asio::this_coro::executor);
    co_await bob.connect("127.0.0.1", f.server->port("framed"));
    co_await login(bob, "bob");
    Client shelly(co_await asio::this_coro::executor);
    co_await shelly.connect("127.0.0.1", f.server->port("framed"));
    co_await login(shelly, "shelly");

    // Reads, as bob (allow-list, no shell) through programs he may run.
    std::vector<std::string> outside;
    outside.push_back("../shelly/private.txt");
    outside.push_back("/home/shelly/private.txt");
    outside.push_back((data / "homes/shelly/private.txt").string());
    outside.push_back((data / "users.json").string());
    outside.push_back((data / "tls/server.key").string());
    outside.push_back((data / "outside.txt").string());
    outside.push_back("/proc/" + server_pid + "/environ");
    outside.push_back("/etc/shadow");
    for (const auto& path : outside) {
      INFO("bob reads " << path);
      auto r = co_await run_cmd(bob, "argv", args("cat", path));
      CHECK(failed(r));
      CHECK(r.out.find(kSecret) == std::string::npos);
      CHECK(r.out.find("$argon2id") == std::string::npos);
      CHECK(r.out.find("env-secret") == std::string::npos);
    }
    // Everywhere but the read-only system directories (too large to read in a test).
    auto grep = co_await run_cmd(bob, "argv", args("grep", "-rs", kSecret, "/home", "/tmp", "/etc", "/dev"));
    CHECK(grep.out.find(kSecret) == std::string::npos);
    auto find = co_await run_cmd(bob, "argv", args("find", "/", "-name", "users.json"));
    CHECK(find.out.find("users.json") == std::string::npos);

    // Reads and writes, as shelly (a shell user may run anything on PATH).
    auto script = "cat " + (data / "users.json").string() + " ../bob/notes.txt /etc/shadow " +
                  (data / "tls/server.key").string() + " /proc/" + server_pid + "/environ; " +
                  "ls /proc | grep -x " + server_pid + "; " +
                  "echo pwned > " + (data / "users.json").string() + "; " +
                  "echo pwned > ../bob/pwned; echo pwned > /usr/pwned; " +
                  "echo pwned > " + (data / "pwned").string() + "; exit 0";
    auto sh = co_await run_cmd(shelly, "line", script);
    INFO(sh.err);
    CHECK(sh.out.find("$argon2id") == std::string::npos);
    CHECK(sh.out.find(kSecret) == std::string::npos);
    CHECK(sh.out.find("pear") == std::string::npos);
    CHECK(sh.out.find(server_pid + "\n") == std::string::npos);
    CHECK(slurp(data / "users.json") == users_json);
    CHECK_FALSE(std::filesystem::exists(f.home("bob") / "pwned"));
    CHECK_FALSE(std::filesystem::exists(data / "pwned"));
    CHECK_FALSE(std::filesystem::exists("/usr/pwned"));

    // No network: not even the server's own port on loopback.
    auto net = co_await run_cmd(shelly, "argv",
                                args("nc", "-z", "-w", "2", "127.0.0.1", f.server->port("framed")));
    CHECK(failed(net));
    // A private /tmp: what a program leaves there is not on the host.
    auto tmp = co_await run_cmd(shelly, "line", "echo x > /tmp/coserve-sandbox-leak && cat /tmp/coserve-sandbox-leak");
    CHECK(tmp.out == "x\n");
    CHECK_FALSE(std::filesystem::exists("/tmp/coserve-sandbox-leak"));

    // getopt abbreviations of a denied option: refused by the policy before anything runs.
    auto co = co_await run_cmd(bob, "argv", args("sort", "--co=sh", "notes.txt"));
    CHECK(error_code_of(Frame{co.reply, {}}) == "forbidden");

    // Normal work in the home still works.
    auto ls = co_await run_cmd(bob, "argv", args("ls"));
    CHECK(ls.out == "notes.txt\n");
    auto found = co_await run_cmd(bob, "argv", args("grep", "-n", "apple", "notes.txt"));
    CHECK(found.out == "2:apple\n");
    auto sorted = co_await run_cmd(bob, "argv", args("sort", "-o", "out.txt", "notes.txt"));
    CHECK(sorted.reply["exit_code"] == 0);
    CHECK(slurp(f.home("bob") / "out.txt") == "apple\nfig\npear\n");
    auto where = co_await run_cmd(bob, "argv", args("pwd"));
    CHECK(where.out == "/home/bob\n");
    if (::geteuid() == 0) {
      // A root server never runs a user's program as root.
      struct stat st {};
      REQUIRE(::stat((f.home("bob") / "out.txt").c_str(), &st) == 0);
      CHECK(st.st_uid != 0);
    }
  }(), 180s);
}

TEST_CASE("sandbox: what a program writes stays within the user's quota") {
  Fixture f({}, {{"quinn", true, "1M"}});
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "quinn");
    auto big = co_await run_cmd(c, "line", "head -c 3000000 /dev/zero > big.bin");
    CHECK(failed(big));
    CHECK(std::filesystem::file_size(f.home("quinn") / "big.bin") <= 1024 * 1024);
    // The files service counts what the program left.
    json quota = {{"service", "files"}, {"op", "quota"}};
    auto q = co_await c.call(quota);
    INFO(q.head.dump());
    CHECK(q.head["used"].get<std::uint64_t>() == std::filesystem::file_size(f.home("quinn") / "big.bin"));
  }());
}

TEST_CASE("sandbox: a user runs a bounded number of commands at once") {
  Fixture f({"--set", "services.command.max_runs_per_user=2"});
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "bob");
    auto first = c.open(cmd("run", "argv", args("sleep", "30")));
    auto second = c.open(cmd("run", "argv", args("sleep", "30")));
    co_await first.next();
    co_await second.next();
    auto third = co_await run_cmd(c, "argv", args("true"));
    CHECK(error_code_of(Frame{third.reply, {}}) == "busy");
    // Another user is not held back by bob's runs.
    Client s(co_await asio::this_coro::executor);
    co_await s.connect("127.0.0.1", f.server->port("framed"));
    co_await login(s, "shelly");
    auto other = co_await run_cmd(s, "argv", args("true"));
    CHECK(other.reply["exit_code"] == 0);
  }());
}

namespace {
std::string healthz(const Fixture& f) {
  auto r = test::run_program(
      {"/usr/bin/curl", "-sS", "--max-time", "5", "http://" + f.server->address("http") + "/healthz"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  return r.out;
}
}  // namespace

TEST_CASE("sandbox: a host where it cannot be made refuses every run, and says why") {
  Fixture f({"--set", "services.command.sandbox_bwrap=/nonexistent/bwrap"});
  CHECK(f.server->log().find("every run will be refused") != std::string::npos);
  CHECK(json::parse(healthz(f))["warnings"].dump().find("refused") != std::string::npos);
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", f.server->port("framed"));
    co_await login(c, "shelly");
    auto r = co_await run_cmd(c, "line", "echo should-not-run");
    CHECK(error_code_of(Frame{r.reply, {}}) == "forbidden");
    CHECK(r.reply["error"]["message"].get<std::string>().find("sandbox") != std::string::npos);
    CHECK(r.out.empty());
  }());
}

TEST_CASE("sandbox: \"none\" is an explicit choice, warned about in the log and /healthz") {
  Fixture f({"--set", "services.command.sandbox=none"});
  CHECK(f.server->log().find("WITHOUT a sandbox") != std::string::npos);
  auto health = json::parse(healthz(f));
  CHECK(health["status"] == "ok");
  REQUIRE(health.contains("warnings"));
  CHECK(health["warnings"].dump().find("without a sandbox") != std::string::npos);

  Fixture sandboxed;
  CHECK_FALSE(json::parse(healthz(sandboxed)).contains("warnings"));
}
