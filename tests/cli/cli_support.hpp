#pragma once
// Helpers for the coserve-cli tests: a server with user alice (password "secret"), the CLI's
// argv, a CLI process we can signal mid-run, file helpers and a tmux-driven terminal.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace coserve::cli_test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline constexpr const char* kPassword = "secret";

// A data dir with user alice, and the real server on it.
class AliceServer {
 public:
  explicit AliceServer(std::vector<std::string> extra_args = {}, std::string quota = {});
  std::string port() const { return server_->port("framed"); }
  fs::path home() const { return dir_.path() / "homes" / "alice"; }
  const fs::path& data_dir() const { return dir_.path(); }
  test::ServerProcess& server() { return *server_; }

  // coserve-cli --port P [--user alice --password-stdin] args...
  std::vector<std::string> argv(std::vector<std::string> args, bool login = true) const;
  // Runs the CLI to completion; logs in as alice unless `login` is false.
  test::ProgramResult cli(std::vector<std::string> args, bool login = true,
                          std::chrono::milliseconds timeout = 60s) const;

 private:
  test::TempDir dir_;
  std::optional<test::ServerProcess> server_;
};

// A program running in the background with stdin from a string, stdout/stderr to files.
class Background {
 public:
  Background(const std::vector<std::string>& argv, const std::string& input);
  ~Background();
  pid_t pid() const noexcept { return pid_; }
  void signal(int sig);
  // Waits for the exit; returns the status (exit code or 128 + signal).
  int wait(std::chrono::milliseconds timeout = 30s);
  std::string out() const;
  std::string err() const;

 private:
  test::TempDir dir_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// `size` bytes from /dev/urandom.
void write_random_file(const fs::path& path, std::size_t size);
std::string read_file(const fs::path& path);
std::string sha256_hex(const fs::path& path);
// Polls `condition` every 10 ms until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// A terminal: a detached tmux session on a private socket, running `command`.
class Terminal {
 public:
  explicit Terminal(const std::string& command);
  ~Terminal();
  // tmux send-keys: each key is a tmux key name or literal text ("Enter", "C-c", "ls").
  void keys(const std::vector<std::string>& keys);
  // Types `text` literally, then Enter.
  void line(const std::string& text);
  std::string screen();
  // Waits until the screen contains `text`; returns the screen (fails the test otherwise).
  std::string wait_for(const std::string& text, std::chrono::milliseconds timeout = 15s);
  bool alive();

 private:
  test::TempDir dir_;
  std::string socket_;
};

bool tmux_available();

// The pid of a `sleep SECONDS` process (the remote commands the tests start), if one runs.
// SECONDS is unusual on purpose ("29.75") so no other process matches.
std::optional<pid_t> sleep_pid(const std::string& seconds);
inline bool sleep_running(const std::string& seconds) { return sleep_pid(seconds).has_value(); }

}  // namespace coserve::cli_test
