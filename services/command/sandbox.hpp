#pragma once
// The barrier around every program `command.run` starts (services.command.sandbox).
//
// Mode "bubblewrap" (the default) wraps the program in Debian's `bwrap`: new mount, PID, IPC,
// UTS, cgroup and network namespaces (and a user namespace when the server is not root). Inside,
// the program sees
//   - the user's home, read-write, at /home/<user> (its working tree; cwd below it),
//   - the system's program and library directories and a few harmless /etc files, read-only
//     (`ro_paths`; symlinks such as Debian's /bin -> usr/bin are recreated as symlinks),
//   - a /proc of its own PID namespace, a minimal /dev, a private size-limited /tmp,
//   - no network unless `network` is true,
// and nothing else: not the data dir, not other homes, not the server's config, keys or
// environment. Argument rules (Policy) are a convenience on top, never the barrier.
//
// Identity. An unprivileged server runs bwrap as itself: bwrap makes a user namespace, and the
// program may make no further ones. A root server runs bwrap as root (it makes namespaces
// without a user namespace, which would map only uid 0) and gives it only CAP_SETUID and
// CAP_SETGID, which `setpriv`, the first thing run inside, uses to become `run_as` for good:
// no capabilities, an empty bounding set, no new privileges. The program never runs as root.
//
// Mode "none" runs programs directly (the operator's explicit choice; the server warns loudly).
//
// A plain class: wrap() only builds an argv, tested without processes. probe() starts a real
// sandbox once at start-up. Immutable after probe(): thread-safe.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace coserve::command {

// The unprivileged identity a root server runs programs as (services.command.run_as).
struct RunAs {
  uid_t uid;
  gid_t gid;
};

struct SandboxSettings {
  enum class Mode { bubblewrap, none };
  Mode mode = Mode::bubblewrap;
  std::filesystem::path bwrap = "/usr/bin/bwrap";
  std::filesystem::path setpriv = "/usr/bin/setpriv";
  // Set when the server runs as root: see Sandbox.
  std::optional<RunAs> run_as;
  bool network = false;
  // Off only where the host's /proc is masked (Docker): no procfs can be mounted, and bwrap
  // cannot write /proc/sys to forbid nested user namespaces. See docker/coserve.json.
  bool proc = true;             // a /proc of the sandbox's own PID namespace (else an empty one)
  bool disable_userns = true;   // the program may not make user namespaces of its own
  std::uint64_t tmp_bytes = 64ull << 20;
  std::vector<std::filesystem::path> ro_paths;

  // From services.command.sandbox_* and run_as (see CommandService::defaults()); `as_root` says
  // whether the server runs as root (run_as is then resolved). Throws ConfigError.
  static SandboxSettings from(const nlohmann::json& settings, bool as_root);
};

// Where one run's program lives, as the server sees it and as the program sees it.
struct SandboxedRun {
  std::filesystem::path home;  // on the host
  std::string user;            // the home appears at /home/<user>
  std::string cwd = "/";       // a virtual path inside the home ("/" = the home itself)
};

class Sandbox {
 public:
  explicit Sandbox(SandboxSettings settings);

  // The argv that runs `program args...` for `run` (bwrap first); for mode none, the program's
  // own argv. argv[0] is an absolute path.
  std::vector<std::string> wrap(const std::filesystem::path& program,
                                const std::vector<std::string>& args, const SandboxedRun& run) const;
  // The home and the cwd as the program sees them (HOME and PWD).
  std::string inner_home(const SandboxedRun& run) const;
  std::string inner_cwd(const SandboxedRun& run) const;

  bool enabled() const noexcept { return settings_.mode == SandboxSettings::Mode::bubblewrap; }
  // The identity programs run as when the server is root (the home is handed to it).
  const std::optional<RunAs>& run_as() const noexcept { return settings_.run_as; }
  // False once probe() failed: every run is refused with `why()`.
  bool usable() const noexcept { return usable_; }
  const std::string& why() const noexcept { return why_; }
  void mark_unusable(std::string why) {
    usable_ = false;
    why_ = std::move(why);
  }

 private:
  SandboxSettings settings_;
  bool usable_ = true;
  std::string why_;
};

}  // namespace coserve::command
