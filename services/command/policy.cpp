#include "command/policy.hpp"

#include <unistd.h>

#include "coserve/config.hpp"
#include "coserve/error.hpp"

namespace coserve::command {

Policy::Policy(const nlohmann::json& s) {
  try {
    for (auto& name : s.at("allow")) allow_.insert(name.get<std::string>());
    for (auto& [program, args] : s.at("deny_args").items())
      deny_args_[program] = args.get<std::vector<std::string>>();
    for (auto& dir : s.at("path")) path_.emplace_back(dir.get<std::string>());
    shell_ = s.at("shell").get<std::string>();
    allow_shell_ = s.at("allow_shell").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("services.command: ") + e.what());
  }
}

std::filesystem::path Policy::find_on_path(const std::string& name) const {
  for (auto& dir : path_) {
    auto candidate = dir / name;
    std::error_code ec;
    if (std::filesystem::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  throw Error(errc::not_found, "program '" + name + "' not found");
}

namespace {

// Matches as GNU getopt reads arguments, so a rule cannot be dodged by spelling:
//   "*"       any argument at all;
//   "-x"      the short option x, alone or inside a cluster (-rx, -xfoo);
//   "--long"  --long, --long=value, and every abbreviation getopt accepts (--lo, --l=v);
//   anything else (find's -exec, a word) the argument exactly, or ARG=value.
// Erring towards refusing: an option's attached value that contains x also matches "-x".
bool denied(const std::string& arg, const std::string& rule) {
  if (rule == "*") return true;
  const bool short_rule = rule.size() == 2 && rule[0] == '-' && rule[1] != '-';
  if (short_rule)
    return arg.size() >= 2 && arg[0] == '-' && arg[1] != '-' &&
           arg.find(rule[1], 1) != std::string::npos;
  if (rule.rfind("--", 0) == 0 && rule.size() > 2) {
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) return false;
    auto name = std::string_view(arg).substr(2, arg.find('=') == std::string::npos
                                                    ? std::string::npos
                                                    : arg.find('=') - 2);
    return !name.empty() && std::string_view(rule).substr(2).starts_with(name);
  }
  return arg == rule || arg.rfind(rule + "=", 0) == 0;
}

}  // namespace

Launch Policy::resolve(const std::vector<std::string>& argv, bool shell_user) const {
  if (argv.empty() || argv[0].empty()) throw Error(errc::bad_request, "no program given");
  const std::string& name = argv[0];
  bool privileged = shell_user && allow_shell_;
  if (name.find('/') != std::string::npos)
    throw Error(errc::forbidden, "program '" + name + "' is not allowed: give a bare name");
  if (!privileged) {
    if (!allow_.contains(name)) throw Error(errc::forbidden, "program '" + name + "' is not allowed");
    if (auto it = deny_args_.find(name); it != deny_args_.end()) {
      for (std::size_t i = 1; i < argv.size(); ++i)
        for (auto& rule : it->second)
          if (denied(argv[i], rule))
            throw Error(errc::forbidden, "program '" + name + "' is not allowed with argument '" +
                                             argv[i] + "'");
    }
  }
  Launch launch;
  launch.program = find_on_path(name);
  launch.args.assign(argv.begin() + 1, argv.end());
  launch.name = name;
  return launch;
}

std::string Policy::path_variable() const {
  std::string out;
  for (auto& dir : path_) out += (out.empty() ? "" : ":") + dir.string();
  return out;
}

Launch Policy::shell_line(const std::string& line) const {
  if (!allow_shell_) throw Error(errc::forbidden, "program 'sh' is not allowed: shells are off");
  Launch launch;
  launch.program = shell_;
  launch.args = {"-c", line};
  launch.name = shell_.filename().string();
  launch.shell = true;
  return launch;
}

}  // namespace coserve::command
