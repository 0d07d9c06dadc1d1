#include "test_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/asio/this_coro.hpp>

extern char** environ;

namespace coserve::test {
namespace {

using namespace std::chrono_literals;

pid_t spawn(const std::vector<std::string>& args, const std::filesystem::path& stderr_file,
            const std::filesystem::path& stdout_file = "/dev/null",
            const std::filesystem::path& stdin_file = "/dev/null") {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 1, stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 0, stdin_file.c_str(), O_RDONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + args[0] + ": " + std::strerror(rc));
  return pid;
}

// Waits for `pid` up to `timeout`; returns the status or nullopt on timeout.
std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "coserve-test-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Tests may leave read-only dirs behind; make them writable so removal works.
  for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec))
      std::filesystem::permissions(it->path(), std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::add, ec);
  }
  std::filesystem::remove_all(path_, ec);
}

std::filesystem::path binary(const std::string& name) {
  return std::filesystem::path(COSERVE_BIN_DIR) / name;
}

ServerProcess::ServerProcess(std::vector<std::string> extra_args,
                             std::optional<std::filesystem::path> data_dir) {
  if (data_dir) {
    data_dir_ = *data_dir;
  } else {
    owned_dir_.emplace();
    data_dir_ = owned_dir_->path();
  }
  auto ready = data_dir_ / "ready.json";
  std::filesystem::remove(ready);
  std::vector<std::string> args = {binary("coserve").string(),
                                   "--data-dir", data_dir_.string(),
                                   "--ready-file", ready.string(),
                                   "--set", "server.workers=2",
                                   "--set", "listeners.framed=127.0.0.1:0",
                                   "--set", "listeners.http=127.0.0.1:0",
                                   "--set", "listeners.echo_tcp=127.0.0.1:0",
                                   "--set", "listeners.echo_udp=127.0.0.1:0",
                                   "--set", "listeners.chat_line=127.0.0.1:0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = spawn(args, data_dir_ / "server.log");
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!std::filesystem::exists(ready)) {
    if (auto status = wait_exit(pid_, 0ms)) {
      pid_ = -1;
      throw std::runtime_error("coserve exited with " + std::to_string(*status) +
                               " before it was ready:\n" + log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_, 5s);
      pid_ = -1;
      throw std::runtime_error("coserve did not get ready in time:\n" + log());
    }
    std::this_thread::sleep_for(10ms);
  }
  bound_ = json::parse(slurp(ready));
}

ServerProcess::~ServerProcess() {
  if (pid_ <= 0) return;
  // A server that died during the test (a crash, a sanitizer's report) or did not stop cleanly
  // shows its log: the test itself only sees a closed connection.
  auto status = wait_exit(pid_, 0ms);
  const bool died = status.has_value();
  if (!died) {
    ::kill(pid_, SIGTERM);
    status = wait_exit(pid_, 15s);
    if (!status) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_, 5s);
    }
  }
  if (died || !status || *status != 0) {
    std::fprintf(stderr, "coserve %s (status %d); its log:\n%s\n",
                 died ? "exited during the test" : "did not stop cleanly", status.value_or(-1),
                 log().c_str());
  }
}

std::string ServerProcess::address(const std::string& listener) const {
  if (!bound_.contains(listener)) throw std::runtime_error("listener not bound: " + listener);
  return bound_[listener].get<std::string>();
}

std::string ServerProcess::port(const std::string& listener) const {
  auto a = address(listener);
  return a.substr(a.rfind(':') + 1);
}

int ServerProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) throw std::runtime_error("server is not running");
  ::kill(pid_, signal);
  auto status = wait_exit(pid_, timeout);
  if (!status) throw std::runtime_error("server did not exit in time:\n" + log());
  pid_ = -1;
  return *status;
}

int ServerProcess::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) throw std::runtime_error("server is not running");
  auto status = wait_exit(pid_, timeout);
  if (!status) throw std::runtime_error("server did not exit in time:\n" + log());
  pid_ = -1;
  return *status;
}

void ServerProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_exit(pid_, 10s);
  pid_ = -1;
}

bool ServerProcess::running() {
  if (pid_ <= 0) return false;
  if (auto status = wait_exit(pid_, 0ms)) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string ServerProcess::log() const { return slurp(data_dir_ / "server.log"); }

int run_binary(const std::vector<std::string>& args, std::string* err,
               std::chrono::milliseconds timeout) {
  TempDir dir;
  auto err_file = dir.path() / "stderr";
  std::vector<std::string> full = {binary("coserve").string()};
  full.insert(full.end(), args.begin(), args.end());
  pid_t pid = spawn(full, err_file);
  auto status = wait_exit(pid, timeout);
  if (!status) {
    ::kill(pid, SIGKILL);
    wait_exit(pid, 5s);
    throw std::runtime_error("coserve did not exit in time");
  }
  if (err) *err = slurp(err_file);
  return *status;
}

ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input,
                          std::chrono::milliseconds timeout) {
  TempDir dir;
  auto in = dir.path() / "stdin", out = dir.path() / "stdout", err = dir.path() / "stderr";
  std::ofstream(in) << input;
  pid_t pid = spawn(argv, err, out, in);
  auto status = wait_exit(pid, timeout);
  if (!status) {
    ::kill(pid, SIGKILL);
    wait_exit(pid, 5s);
    throw std::runtime_error(argv[0] + " did not exit in time");
  }
  return ProgramResult{*status, slurp(out), slurp(err)};
}

awaitable<void> sleep_for(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(duration);
  co_await timer.async_wait(use_awaitable);
}

}  // namespace coserve::test
