#pragma once
// What `command.run` may start (config services.command.*). A plain class, tested without
// processes (tests/command/policy_test.cpp). Immutable after construction: thread-safe.
//
// Default policy: only programs in `allow`, by bare name, found in `path`, run without a shell,
// and never with an argument listed for them in `deny_args`, matched as getopt reads options
// ("*" = no arguments at all; "-x" = a short option, also inside clusters like -rx; "--long" =
// the option and every abbreviation of it, with or without =value; anything else exactly or as
// "ARG=..."). Users with the `shell` flag (and `allow_shell` on) may run any program on `path`,
// and `line` goes to `shell -c line` for them. This is a convenience: every program runs in the
// sandbox (sandbox.hpp), which is the barrier.
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace coserve::command {

struct Launch {
  std::filesystem::path program;   // absolute path to execute
  std::vector<std::string> args;   // argv[1..]
  std::string name;                // argv[0] as the user gave it
  bool shell = false;
};

class Policy {
 public:
  // From services.command (see CommandService::defaults()); throws ConfigError.
  explicit Policy(const nlohmann::json& settings);

  // Checks argv (argv[0] a bare program name) and finds the program. Throws Error(forbidden)
  // naming the program or argument, Error(not_found) when it is not on `path`,
  // Error(bad_request) for an empty argv.
  Launch resolve(const std::vector<std::string>& argv, bool shell_user) const;
  // A `line` for a shell user: `shell -c line`.
  Launch shell_line(const std::string& line) const;
  bool shell_allowed() const noexcept { return allow_shell_; }
  // The absolute path of `name` on `path`; throws Error(not_found).
  std::filesystem::path find_program(const std::string& name) const { return find_on_path(name); }
  // `path` as a PATH value (a:b:c) for the child's environment.
  std::string path_variable() const;

 private:
  std::filesystem::path find_on_path(const std::string& name) const;

  std::set<std::string> allow_;
  std::map<std::string, std::vector<std::string>> deny_args_;
  std::vector<std::filesystem::path> path_;
  std::filesystem::path shell_;
  bool allow_shell_ = true;
};

}  // namespace coserve::command
