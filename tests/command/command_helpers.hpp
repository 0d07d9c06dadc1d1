#pragma once
// Shared by the `command` tests against the real server: a data dir with users, request
// builders and a runner that collects a command's output.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coserve/client.hpp"
#include "test_support.hpp"

namespace coserve::test {

struct CommandUser {
  std::string name;
  bool shell = false;
  std::string quota;  // "" = none, else as `coserve user add --quota`
};

// A data dir with a plain user `bob` and a shell user `shelly` (or the given users), and the
// server on it.
struct Fixture {
  TempDir dir;
  std::unique_ptr<ServerProcess> server;
  explicit Fixture(std::vector<std::string> args = {},
                   std::vector<CommandUser> users = {{"bob", false, ""}, {"shelly", true, ""}}) {
    for (auto& u : users) {
      std::vector<std::string> argv{binary("coserve").string(), "user", "add", u.name,
                                    "--password-stdin", "--data-dir", dir.path().string()};
      if (u.shell) argv.push_back("--shell");
      if (!u.quota.empty()) argv.insert(argv.end(), {"--quota", u.quota});
      auto r = run_program(argv, "secret-pw\n");
      INFO(r.err);
      REQUIRE(r.status == 0);
    }
    server = std::make_unique<ServerProcess>(args, dir.path());
  }
  std::filesystem::path home(const std::string& user) const { return dir.path() / "homes" / user; }
};

template <class... A>
json cmd(std::string op, A&&... fields) {
  return test::make_request("command", std::move(op), std::forward<A>(fields)...);
}
template <class... S>
json args(S&&... words) {
  json a = json::array();
  (a.push_back(std::string(words)), ...);
  return a;
}

inline awaitable<void> login(Client& c, const std::string& user) {
  json request = {{"service", "auth"}, {"op", "login"}, {"user", user}, {"password", "secret-pw"}};
  auto reply = co_await c.call(request);
  INFO(reply.head.dump());
  REQUIRE(reply.head["ok"] == true);
}

struct RunResult {
  std::string out, err;
  json reply;
  std::optional<pid_t> pid;
  std::size_t events = 0;
};

// Runs to the end, collecting output.
inline awaitable<RunResult> run_json(Client& c, json request) {
  auto stream = c.open(std::move(request));
  RunResult r;
  for (;;) {
    auto f = co_await stream.next();
    if (stream.done()) {
      r.reply = f.head;
      co_return r;
    }
    auto event = f.head.value("event", "");
    if (event == "started") r.pid = f.head["pid"].get<pid_t>();
    if (event == "stdout") r.out += f.body;
    if (event == "stderr") r.err += f.body;
    ++r.events;
  }
}

template <class... A>
awaitable<RunResult> run_cmd(Client& c, A&&... fields) {
  return run_json(c, cmd("run", std::forward<A>(fields)...));
}


}  // namespace coserve::test
