#pragma once
// Helpers for tests that drive the real server: a temp directory, the real `coserve` binary as a
// child process on ephemeral ports, and a runner for test bodies written as coroutines.
#include <sys/types.h>

#include <chrono>
#include <exception>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "coserve/asio.hpp"
#include "coserve/frame.hpp"

namespace coserve::test {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

// The coserve binary as a child process. Every TCP listener is on 127.0.0.1:0 and the Unix ones
// in the data dir; the constructor returns once the ready file names them.
class ServerProcess {
 public:
  // `extra_args` come after the defaults, so `--set` in them wins.
  explicit ServerProcess(std::vector<std::string> extra_args = {},
                         std::optional<std::filesystem::path> data_dir = std::nullopt);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Listener name → "127.0.0.1:port" or a socket path, from the ready file.
  const json& bound() const noexcept { return bound_; }
  std::string address(const std::string& listener) const;
  std::string port(const std::string& listener) const;  // TCP listeners
  pid_t pid() const noexcept { return pid_; }
  const std::filesystem::path& data_dir() const noexcept { return data_dir_; }

  // Sends `signal` and waits up to `timeout` for the exit; returns the exit status (128+signal
  // when killed), or throws if it did not exit in time.
  int stop(int signal = 15, std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // Waits for an exit caused elsewhere (a signal the test sent itself); returns its status.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // SIGKILL, as a crash: no cleanup runs in the server.
  void kill9();
  bool running();
  // What the server wrote to stderr so far.
  std::string log() const;

 private:
  std::optional<TempDir> owned_dir_;
  std::filesystem::path data_dir_;
  pid_t pid_ = -1;
  json bound_;
};

// Runs the `coserve` binary with `args` to completion (for usage and startup errors). Returns
// the exit status; stderr goes to `err` when given.
int run_binary(const std::vector<std::string>& args, std::string* err = nullptr,
               std::chrono::milliseconds timeout = std::chrono::seconds(15));

// Runs any program to completion with `input` on its stdin; captures stdout and stderr.
struct ProgramResult {
  int status = -1;  // exit code, or 128 + signal
  std::string out;
  std::string err;
};
ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Path of a binary built by this project ("coserve", "coserve-cli").
std::filesystem::path binary(const std::string& name);

// Runs a test body to completion on a fresh io_context; rethrows what it throws; fails if it
// takes longer than `timeout`.
template <class T>
T run(awaitable<T> body, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  asio::io_context io;
  std::exception_ptr failure;
  bool done = false;
  if constexpr (std::is_void_v<T>) {
    asio::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
      failure = e;
      done = true;
    });
    io.run_for(timeout);
    if (!done) throw std::runtime_error("test body timed out");
    if (failure) std::rethrow_exception(failure);
  } else {
    std::optional<T> result;
    asio::co_spawn(io, std::move(body), [&](std::exception_ptr e, T value) {
      failure = e;
      if (!e) result.emplace(std::move(value));
      done = true;
    });
    io.run_for(timeout);
    if (!done) throw std::runtime_error("test body timed out");
    if (failure) std::rethrow_exception(failure);
    return std::move(*result);
  }
}

// Waits on the current executor.
awaitable<void> sleep_for(std::chrono::milliseconds duration);

// A request object {"service", "op", key: value...} built by these variadic helpers, not a
// braced list: GCC 12 cannot keep an initializer_list alive across a co_await in the same
// expression ("array used as initializer").
inline void put_fields(json&) {}
template <class V, class... Rest>
void put_fields(json& j, const char* key, V&& value, Rest&&... rest) {
  j[key] = std::forward<V>(value);
  put_fields(j, std::forward<Rest>(rest)...);
}
template <class... A>
json make_request(std::string service, std::string op, A&&... fields) {
  json j = json::object();
  put_fields(j, std::forward<A>(fields)...);
  j["service"] = std::move(service);
  j["op"] = std::move(op);
  return j;
}

}  // namespace coserve::test
