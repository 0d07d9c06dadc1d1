#include "cli_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>
#include <openssl/evp.h>

extern char** environ;

namespace coserve::cli_test {

AliceServer::AliceServer(std::vector<std::string> extra_args, std::string quota) {
  std::vector<std::string> add = {test::binary("coserve").string(), "user", "add", "alice",
                                  "--data-dir", dir_.path().string(), "--password-stdin"};
  if (!quota.empty()) {
    add.push_back("--quota");
    add.push_back(quota);
  }
  auto added = test::run_program(add, std::string(kPassword) + "\n");
  if (added.status != 0) throw std::runtime_error("user add failed: " + added.err);
  server_.emplace(std::move(extra_args), dir_.path());
}

std::vector<std::string> AliceServer::argv(std::vector<std::string> args, bool login) const {
  std::vector<std::string> all = {test::binary("coserve-cli").string(), "--port", port()};
  if (login) {
    all.push_back("--user");
    all.push_back("alice");
    all.push_back("--password-stdin");
  }
  all.insert(all.end(), args.begin(), args.end());
  return all;
}

test::ProgramResult AliceServer::cli(std::vector<std::string> args, bool login,
                                     std::chrono::milliseconds timeout) const {
  return test::run_program(argv(std::move(args), login),
                           login ? std::string(kPassword) + "\n" : std::string(), timeout);
}

Background::Background(const std::vector<std::string>& argv, const std::string& input) {
  std::ofstream(dir_.path() / "stdin") << input;
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  auto in = (dir_.path() / "stdin").string(), out = (dir_.path() / "stdout").string(),
       err = (dir_.path() / "stderr").string();
  posix_spawn_file_actions_addopen(&actions, 0, in.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
}

Background::~Background() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void Background::signal(int sig) { ::kill(pid_, sig); }

int Background::wait(std::chrono::milliseconds timeout) {
  int status = 0;
  bool done = wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
  if (!done) throw std::runtime_error("the CLI did not exit in time");
  reaped_ = true;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string Background::out() const { return read_file(dir_.path() / "stdout"); }
std::string Background::err() const { return read_file(dir_.path() / "stderr"); }

void write_random_file(const fs::path& path, std::size_t size) {
  std::ifstream random("/dev/urandom", std::ios::binary);
  std::ofstream out(path, std::ios::binary);
  std::string buffer(1 << 20, '\0');
  while (size > 0) {
    auto n = std::min(size, buffer.size());
    random.read(buffer.data(), static_cast<std::streamsize>(n));
    out.write(buffer.data(), static_cast<std::streamsize>(n));
    size -= n;
  }
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string sha256_hex(const fs::path& path) {
  auto data = read_file(path);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  char byte[3];
  for (unsigned int i = 0; i < length; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", digest[i]);
    hex += byte;
  }
  return hex;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

bool tmux_available() {
  return ::access("/usr/bin/tmux", X_OK) == 0;
}

std::optional<pid_t> sleep_pid(const std::string& seconds) {
  // Anchored: the CLI's own command line also ends in "sleep SECONDS".
  auto found = test::run_program({"/usr/bin/pgrep", "-f", "^(/usr)?(/bin/)?sleep " + seconds + "$"});
  if (found.status != 0 || found.out.empty()) return std::nullopt;
  return static_cast<pid_t>(std::stol(found.out));
}

Terminal::Terminal(const std::string& command) {
  socket_ = (dir_.path() / "tmux.sock").string();
  auto started = test::run_program({"/usr/bin/tmux", "-S", socket_, "-f", "/dev/null",
                                    "new-session", "-d", "-x", "160", "-y", "50",
                                    "env HOME=" + dir_.path().string() + " " + command +
                                        "; echo '[exited '$?']'; sleep 60"});
  if (started.status != 0) throw std::runtime_error("tmux failed: " + started.err);
}

Terminal::~Terminal() { test::run_program({"/usr/bin/tmux", "-S", socket_, "kill-server"}); }

void Terminal::keys(const std::vector<std::string>& keys) {
  std::vector<std::string> argv = {"/usr/bin/tmux", "-S", socket_, "send-keys"};
  argv.insert(argv.end(), keys.begin(), keys.end());
  test::run_program(argv);
}

void Terminal::line(const std::string& text) {
  test::run_program({"/usr/bin/tmux", "-S", socket_, "send-keys", "-l", text});
  keys({"Enter"});
}

std::string Terminal::screen() {
  return test::run_program({"/usr/bin/tmux", "-S", socket_, "capture-pane", "-p", "-J"}).out;
}

std::string Terminal::wait_for(const std::string& text, std::chrono::milliseconds timeout) {
  std::string shown;
  bool found = wait_until(
      [&] {
        shown = screen();
        return shown.find(text) != std::string::npos;
      },
      timeout);
  INFO("screen:\n" << shown);
  REQUIRE(found);
  return shown;
}

bool Terminal::alive() {
  return screen().find("[exited ") == std::string::npos;
}

}  // namespace coserve::cli_test
