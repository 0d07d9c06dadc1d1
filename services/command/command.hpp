#pragma once
// Service `command` (docs/protocol.md): runs programs for a logged-in user and
// streams their output.
//
//   run {argv | line, timeout_ms?, stdin?} (+ body = stdin)
//        events: started {pid}, stdout + bytes, stderr + bytes
//        reply:  {exit_code | signal, duration_ms, truncated?}
//   cancel {target}      cancels a run on this connection (same as core.cancel)
//   cd {path} → {cwd}    pwd → {cwd}     (a per-session directory inside the home)
//
// Processes are started with Boost.Process v2 on the blocking pool (fork/exec must not stall
// an I/O thread), each in its own process group with a clean environment, rlimits and all
// other descriptors closed. Their output is read through Asio pipes on the session's executor
// and their exit is awaited on a pidfd (no blocking waitpid, no SIGCHLD handler). The whole
// group is killed on cancel, timeout, output cap, normal exit (stragglers) and session end.
//
// Threading: handlers run on the session's executor; per-session state (cwd) lives in the
// session. The service itself is immutable after construction.
#include <chrono>
#include <cstdint>
#include <filesystem>

#include <boost/asio/thread_pool.hpp>

#include "command/policy.hpp"
#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve::auth {
class AuthService;
}

namespace coserve::command {

struct ChildLimits {
  std::uint64_t cpu_seconds = 60;
  std::uint64_t address_space = 1ull << 30;
  std::uint64_t open_files = 256;
  std::uint64_t processes = 4096;
};

class CommandService final : public BasicService<CommandService> {
 public:
  static constexpr std::string_view kName = "command";
  static constexpr auto ops() {
    return std::array{op("run", &CommandService::run), op("cancel", &CommandService::cancel),
                      op("cd", &CommandService::cd), op("pwd", &CommandService::pwd)};
  }
  static json defaults();

  explicit CommandService(ServiceContext& ctx);

  awaitable<Outcome> run(Call& call);
  awaitable<Outcome> cancel(Call& call);
  awaitable<Outcome> cd(Call& call);
  awaitable<Outcome> pwd(Call& call);

 private:
  struct Identity {
    std::string user;
    std::filesystem::path home;
    bool shell = false;
  };
  Identity identity(Call& call) const;

  asio::thread_pool& blocking_;
  std::filesystem::path data_dir_;
  auth::AuthService* auth_;
  Policy policy_;
  ChildLimits child_limits_;
  std::int64_t default_timeout_ms_;
  std::int64_t max_timeout_ms_;
  std::uint64_t max_output_bytes_;
};

}  // namespace coserve::command
