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
// Every program runs inside a sandbox (command/sandbox.hpp: bubblewrap namespaces that show it
// only the user's home and the system's programs), under RLIMIT_FSIZE set to what is left of
// the user's quota, as an unprivileged uid (the server's own, or `run_as` when the server is
// root), at most `max_runs_per_user` at a time per user. The argument policy is a convenience
// on top. Processes are started with Boost.Process v2 on the blocking pool (fork/exec must not
// stall an I/O thread), each in its own session with a clean environment, rlimits and all
// other descriptors closed. Their output is read through Asio pipes on the session's executor
// and their exit is awaited on a pidfd (no blocking waitpid, no SIGCHLD handler). The whole
// group is killed on cancel, timeout, output cap, normal exit (stragglers) and session end.
//
// Threading: handlers run on the session's executor; per-session state (cwd) lives in the
// session. The service itself is immutable after construction.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <sys/types.h>

#include <boost/asio/thread_pool.hpp>

#include "command/policy.hpp"
#include "command/sandbox.hpp"
#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve::auth {
class AuthService;
}
namespace coserve::files {
class FilesService;
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
  static constexpr bool kLoginRequired = true;

  explicit CommandService(ServiceContext& ctx);

  // The sandbox is off (sandbox "none") or cannot be made here (every run refused).
  std::vector<std::string> warnings() const override;

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
  // Starts `true` in the sandbox once (at start-up); marks the sandbox unusable on failure.
  void probe_sandbox();
  // Bytes the user may still write (RLIMIT_FSIZE), from the files service's quota ledger.
  awaitable<std::uint64_t> remaining_quota(const Identity& who);
  // Tells the quota ledger what the run left on disk.
  awaitable<void> recount_quota(const Identity& who);

  // Counts a user's runs in progress across all sessions. Thread-safe: sessions on every worker
  // take and give back slots; the mutex guards only the map update.
  class RunSlot {
   public:
    RunSlot(CommandService& owner, std::string user) : owner_(&owner), user_(std::move(user)) {}
    RunSlot(RunSlot&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), user_(std::move(o.user_)) {}
    RunSlot& operator=(RunSlot&&) = delete;
    ~RunSlot();

   private:
    CommandService* owner_;
    std::string user_;
  };
  std::optional<RunSlot> take_slot(const std::string& user);

  asio::thread_pool& blocking_;
  std::filesystem::path data_dir_;
  ServiceRef<auth::AuthService> auth_;    // empty: homes are <data_dir>/homes/<user>
  ServiceRef<files::FilesService> files_;  // empty: no quota to keep
  Policy policy_;
  Sandbox sandbox_;
  std::size_t max_runs_per_user_;
  std::mutex slots_mutex_;
  std::map<std::string, std::size_t, std::less<>> runs_in_progress_;
  ChildLimits child_limits_;
  std::int64_t default_timeout_ms_;
  std::int64_t max_timeout_ms_;
  std::uint64_t max_output_bytes_;
};

}  // namespace coserve::command
